"""`real-assets`: run the whole graph (demo), open the UIs, audit lineage."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from real_assets.settings import HOME_ENV

DEMO_STEPS: list[tuple[str, bool]] = [
    ("raw_responses", False),
    ("response_embeddings", False),
    ("response_similarity", False),
    ("pair_candidates", False),
    ("reference_policy", False),
    ("selected_pairs", True),
    ("dpo_checkpoint", True),
    ("eval_scores", True),
    ("strategy_comparison", False),
]
"""Materialization order; partitioned steps run once per strategy."""

DAGSTER_YAML = """\
# Written by real-assets. Every pool (warehouse, gpu) admits one step at a time, across runs too.
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""


INSTANCE_CONFIG_ENV = "REAL_ASSETS_INSTANCE_CONFIG"
"""A Dagster instance config (e.g. deploy/dagster.yaml: Postgres storage, queued runs) for demo and ui."""


def prepare_home(home: str | None, instance_config: str | None = None) -> Path:
    """Point REAL_ASSETS_HOME and DAGSTER_HOME at the home folder and write the instance config: the given
    file (`--instance-config`, else `$REAL_ASSETS_INSTANCE_CONFIG`) copied as is, so its `env:` values are
    read by Dagster at startup and no secret is written; else the embedded default, once."""
    if home:
        os.environ[HOME_ENV] = str(Path(home).resolve())
    from real_assets.settings import home_dir

    root = home_dir()
    dagster_home = root / "dagster"
    dagster_home.mkdir(exist_ok=True)
    config = dagster_home / "dagster.yaml"
    source = instance_config or os.environ.get(INSTANCE_CONFIG_ENV)
    if source:
        config.write_text(Path(source).read_text())
    elif not config.exists():
        config.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return root


def _ingest_config(args) -> dict:
    config = {"source": args.source, "seed": args.seed}
    if args.path:
        config["path"] = args.path
    if args.limit:
        config["limit"] = args.limit
    if args.n_prompts:
        config["n_prompts"] = args.n_prompts
    if args.column_map:
        config["column_map"] = json.loads(args.column_map)
    return config


def _quiet_libraries() -> None:
    """The demo prints one line per step: silence the libraries' progress bars and deprecation chatter
    (errors still surface; every step's own log is in the Dagster run)."""
    import warnings

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import logging

    import mlflow  # noqa: F401 - configures its loggers on import; lower them after

    logging.getLogger("mlflow").setLevel(logging.WARNING)


def demo(args) -> int:
    root = prepare_home(args.home, args.instance_config)
    if not args.path or Path(args.path).exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing to fetch: fail fast rather than try a hub
    _quiet_libraries()
    import dagster as dg

    from real_assets.core.report import markdown_table
    from real_assets.core.selection import STRATEGIES
    from real_assets.definitions import ASSETS, CHECKS, resources
    from real_assets.resources import Warehouse

    instance = dg.DagsterInstance.get()
    run_config = {"ops": {"raw_responses": {"config": _ingest_config(args)}}}
    if args.dpo_epochs:
        run_config["ops"]["dpo_checkpoint"] = {"config": {"epochs": args.dpo_epochs}}
    if args.sft_epochs:
        run_config["ops"]["reference_policy"] = {"config": {"epochs": args.sft_epochs}}
    print(f"real-assets demo: home {root}, source {args.source}", flush=True)
    total = time.perf_counter()
    for name, partitioned in DEMO_STEPS:
        for partition in STRATEGIES if partitioned else [None]:
            label = f"{name}[{partition}]" if partition else name
            started = time.perf_counter()
            print(f"  {label:<32}", end="", flush=True)
            result = dg.materialize(
                [*ASSETS, *CHECKS],
                selection=[dg.AssetKey(name)],
                partition_key=partition,
                instance=instance,
                resources=resources(),
                run_config={
                    "ops": {k: v for k, v in run_config["ops"].items() if k == name},
                    "loggers": {"console": {"config": {"log_level": "WARNING"}}},
                },
                tags={"real_assets/launched_by": "demo"},
                raise_on_error=False,
            )
            if not result.success:
                print("FAILED", flush=True)
                for event in result.all_events:
                    if event.is_failure and event.event_specific_data is not None:
                        print(getattr(event.event_specific_data, "error", event.message), file=sys.stderr)
                return 1
            print(f"{time.perf_counter() - started:6.1f} s  run {result.run_id[:8]}", flush=True)
    with Warehouse().connect(read_only=True) as con:
        table = con.execute(
            "select * from eval.strategy_comparison order by list_position(?, strategy)", [list(STRATEGIES)]
        ).df()
    print(f"\nall steps done in {time.perf_counter() - total:.1f} s\n")
    print(markdown_table(table))
    print(f"\nDagster UI:  real-assets ui --home {root}\nMLflow UI:   real-assets mlflow-ui --home {root}")
    return 0


def _exec(cmd: list[str]) -> int:
    """Replace this process with the server, so a signal to `real-assets ...` reaches the server itself."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *cmd])
    return 1  # not reached


def ui(args) -> int:
    """`dagster dev` (webserver and daemon) on the installed code location, bound to 127.0.0.1 by default,
    with the home's instance."""
    prepare_home(args.home, args.instance_config)
    return _exec(
        ["-m", "dagster", "dev", "-m", "real_assets.definitions", "-h", args.host, "-p", str(args.port)]
    )


def mlflow_ui(args) -> int:
    """The MLflow tracking server and UI on the tracking store (`$MLFLOW_TRACKING_URI`, e.g. Postgres, else
    the home's SQLite), bound to 127.0.0.1 by default."""
    prepare_home(args.home)
    from real_assets.settings import artifact_root, default_tracking_uri

    uri = default_tracking_uri()
    cmd = [
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    cmd += ["--workers", str(args.workers)]
    artifacts = artifact_root(uri)
    if artifacts:
        cmd += ["--default-artifact-root", artifacts]
    # MLflow's job runner (huey consumers for GenAI jobs, unused here) outlives a SIGTERM to the server.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return _exec(cmd)


def _instance_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--instance-config",
        help=f"Dagster instance config to use, e.g. deploy/dagster.yaml (default ${INSTANCE_CONFIG_ENV}, "
        "else the embedded SQLite instance under the home)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="real-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="materialize every asset and strategy into the home's Dagster instance")
    p.add_argument("--home", help="home folder (default $REAL_ASSETS_HOME or ./.real_assets)")
    p.add_argument("--source", default="synthetic", help="synthetic, hh_rlhf, shp2, ultrafeedback or table")
    p.add_argument("--path", help="local file or hub dataset id for the source")
    p.add_argument("--limit", type=int, help="read at most this many input rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--column-map",
        help='table source: JSON such as {"prompt": "question", "response": "answer", "score": "rating"}',
    )
    p.add_argument("--n-prompts", type=int, help="synthetic source: number of prompts (default 360)")
    p.add_argument("--sft-epochs", type=float, help="override the reference SFT epochs")
    p.add_argument("--dpo-epochs", type=float, help="override the DPO epochs")
    _instance_argument(p)
    p.set_defaults(func=demo)

    p = sub.add_parser("ui", help="serve the Dagster UI and daemon (dagster dev) on 127.0.0.1")
    p.add_argument("--home")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=3000)
    _instance_argument(p)
    p.set_defaults(func=ui)

    p = sub.add_parser("mlflow-ui", help="serve the MLflow tracking server and UI on 127.0.0.1")
    p.add_argument("--home")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    p.set_defaults(func=mlflow_ui)

    from real_assets.audit import add_audit_parser

    add_audit_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
