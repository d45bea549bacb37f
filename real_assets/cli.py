"""`real-assets`: run the whole graph (demo), open the UIs, audit lineage."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from real_assets import interrupts
from real_assets.core.heap import paused_collections
from real_assets.core.sources.registry import source_names
from real_assets.homes import INSTANCE_CONFIG_ENV, instance_of, prepare_home, server_environment
from real_assets.presets import preset_names
from real_assets.settings import MODEL_BACKEND_ENV, Locations


def _ingest_config(args) -> dict:
    config = {"source": args.source, "seed": args.seed}
    if args.path:
        config["path"] = args.path
    if args.limit is not None:
        config["limit"] = args.limit
    if args.n_prompts is not None:
        config["n_prompts"] = args.n_prompts
    if args.column_map:
        config["column_map"] = json.loads(args.column_map)
    return config


def _step_configs(args, defs) -> dict[str, dict]:
    """Each step's config for this demo: the ingest from the source flags, the epochs flags, then every
    `--config ASSET=JSON` merged over them (`run_steps` checks the fields before any step runs)."""
    from real_assets.presets import PRESETS

    preset = PRESETS[args.preset].configs if args.preset else {}
    configs: dict[str, dict] = {name: dict(values) for name, values in preset.items()}
    configs["raw_responses"] = configs.get("raw_responses", {}) | _ingest_config(args)
    if args.dpo_epochs is not None:
        configs["dpo_checkpoint"] = configs.get("dpo_checkpoint", {}) | {"epochs": args.dpo_epochs}
    if args.sft_epochs is not None:
        configs["reference_policy"] = configs.get("reference_policy", {}) | {"epochs": args.sft_epochs}
    assets = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    for item in args.config or []:
        name, _, text = item.partition("=")
        if name not in assets:
            raise ValueError(f"{item!r}: no asset {name!r}; the assets are: {', '.join(sorted(assets))}")
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{item!r}: the value is not JSON ({e})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{item!r}: the value must be a JSON object of config fields")
        configs[name] = configs.get(name, {}) | values
    return configs


def quiet_libraries() -> None:
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


DEFAULT_SEEDS = 2
"""The default demo's seeds per strategy: enough for an interval, within its time budget."""


def apply_preset(args) -> None:
    """Fill the demo flags the command line left unset from `--preset` (if any), then the defaults."""
    from real_assets.presets import PRESETS

    flags = PRESETS[args.preset].flags if args.preset else {}
    for name, value in flags.items():
        if getattr(args, name, None) in (None, []):
            setattr(args, name, list(value) if isinstance(value, tuple) else value)
    args.source = args.source or "synthetic"
    args.seeds = args.seeds or DEFAULT_SEEDS
    args.skip = args.skip or []


def demo(args) -> int:
    if args.loop:
        from real_assets.annotation_loop import demo_loop

        quiet_libraries()
        return demo_loop(args, prepare_home(args.home, args.instance_config))
    # Start-up (imports, definitions, instance) makes long-lived objects and little garbage: no collections,
    # then the objects are frozen (core.heap); a fake demo's start-up took 4.1 s with them, 3.2 s without.
    with paused_collections():
        apply_preset(args)
        quiet_libraries()
        locations = prepare_home(args.home, args.instance_config)
        root = locations.home
        if not args.path or Path(args.path).exists():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing to fetch: fail fast rather than try a hub
        import dagster as dg

        from real_assets.core.report import display_table, markdown_table, tie_note
        from real_assets.core.selection import STRATEGIES
        from real_assets.definitions import definitions
        from real_assets.defs.annotation import loop_asset_names
        from real_assets.defs.common import SettingOutOfRange
        from real_assets.defs.partitions import SEEDS
        from real_assets.demo import StepInterrupted, run_steps
        from real_assets.mixed_data import mixing_notice, stored_ingestions
        from real_assets.recovery import fail_runs_of_this_process, recover

        if not 1 <= args.seeds <= len(SEEDS):
            print(f"--seeds must be between 1 and {len(SEEDS)}", file=sys.stderr)
            return 2
        unknown = sorted(set(args.strategies or []) - set(STRATEGIES))
        if unknown:
            print(
                f"--strategies: unknown {', '.join(unknown)}; known: {', '.join(STRATEGIES)}", file=sys.stderr
            )
            return 2
        defs = definitions(locations, args.model_backend)
        instance = instance_of(locations)
        for line in recover(instance, root, locations.tracking_uri):
            print(f"recovered: {line}", flush=True)
        try:
            ops = {name: {"config": config} for name, config in _step_configs(args, defs).items()}
        except ValueError as e:
            print(f"--config: {e}", file=sys.stderr)
            return 2
        preset = f", preset {args.preset}" if args.preset else ""
        print(f"real-assets demo: home {root}, source {args.source}{preset}", flush=True)
        warehouse = defs.resources["warehouse"]
        if args.start in (None, "raw_responses"):
            notice = mixing_notice(warehouse, ops["raw_responses"]["config"])
            if notice:
                print(f"note: {notice}", flush=True)
    total = time.perf_counter()
    try:
        done = run_steps(
            defs,
            instance,
            ops,
            only=args.partition,
            seeds=args.seeds,
            start=args.start,
            strategies=args.strategies,
            skip=[*args.skip, *loop_asset_names(defs)],  # the annotation loop runs with --loop
        )
    except StepInterrupted as e:
        with interrupts.deferred():
            failed = fail_runs_of_this_process(instance, f"interrupted by {e.name}")
            recover(instance, root, locations.tracking_uri)  # MLflow runs KILLED, staging folders removed
        where = f"in step {e.step}" if e.step else "between steps"
        resume = f"; resume with --from {e.step.split('[')[0]}" if e.step else ""
        runs = f" (run {', '.join(r[:8] for r in failed)} marked failed)" if failed else ""
        print(f"real-assets demo: interrupted by {e.name} {where}{runs}{resume}", file=sys.stderr)
        return e.exit_code
    except SettingOutOfRange as e:
        print(f"real-assets demo: setting out of range: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # --from names no step
        print(f"--from: {e}", file=sys.stderr)
        return 2
    except dg.DagsterInvalidConfigError as e:
        print(f"--config: {e}", file=sys.stderr)
        return 2
    if not done:
        return 1
    print(f"\nall steps done in {time.perf_counter() - total:.1f} s\n")
    with warehouse.connect(read_only=True) as con:
        if "strategy_comparison" not in args.skip:
            table = con.execute(
                "select * from eval.strategy_comparison order by list_position(?, strategy)",
                [list(STRATEGIES)],
            ).df()
            diffs = con.execute("select * from eval.strategy_differences").df()
            print(markdown_table(display_table(table, diffs)))
            note = tie_note(table)
            if note:
                print(f"\nnote: {note}")
        if "budget_sweep" not in args.skip:
            sweep = con.execute("select * from eval.budget_sweep order by strategy, keep_fraction, seed").df()
            print("\nbudget sweep (global ranking, keep fraction of every candidate pair):\n")
            print(markdown_table(sweep))
    ingestions = stored_ingestions(warehouse)
    if ingestions["source_file"].nunique() > 1:
        print(f"\nbuilt from {len(ingestions)} ingestions of this home:\n")
        print(markdown_table(ingestions))
    print(f"\nDagster UI:  real-assets ui --home {root}\nMLflow UI:   real-assets mlflow-ui --home {root}")
    return 0


def _exec(cmd: list[str]) -> int:
    """Replace this process with the server, so a signal to `real-assets ...` reaches the server itself.

    SIGINT and SIGTERM get their default actions first: a background job of a non-interactive shell
    (`nohup real-assets ui &`) starts with SIGINT ignored, an ignored signal stays ignored across exec, and
    `dagster dev` gives SIGTERM whatever SIGINT has, so SIGTERM could not stop it."""
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *cmd])
    return 1  # not reached


def ui(args) -> int:
    """`dagster dev` (webserver and daemon) on the installed code location, bound to 127.0.0.1 by default,
    with the home's instance."""
    server_environment(prepare_home(args.home, args.instance_config))
    return _exec(
        ["-m", "dagster", "dev", "-m", "real_assets.definitions", "-h", args.host, "-p", str(args.port)]
    )


def mlflow_ui(args) -> int:
    """The MLflow tracking server and UI on the tracking store (`$MLFLOW_TRACKING_URI`, e.g. Postgres, else
    the home's SQLite), bound to 127.0.0.1 by default."""
    locations = prepare_home(args.home)
    server_environment(locations)
    uri = locations.tracking_uri
    cmd = ["-m", "mlflow", "server", "--backend-store-uri", uri]
    cmd += ["--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    artifacts = locations.mlflow_artifacts
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


def _server_parser(sub, name: str, help: str, port: int, func) -> argparse.ArgumentParser:
    """A subcommand that serves a UI: `--home`, and `--host`/`--port` bound to 127.0.0.1 by default."""
    parser = sub.add_parser(name, help=f"{help} on 127.0.0.1")
    parser.add_argument("--home")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=port)
    parser.set_defaults(func=func)
    return parser


def run_audit(args: argparse.Namespace) -> int:
    from real_assets.audit import audit
    from real_assets.definitions import definitions

    locations = prepare_home(args.home, read_only=True)  # the audit only reads: a read-only home will do
    report = audit(definitions(locations), args.partition)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_table())
    if args.lineage:
        from real_assets.annotation_audit import annotation_lineage, format_lineage, lineage_json

        lineage = annotation_lineage(locations, args.lineage)
        print(lineage_json(lineage) if args.json else format_lineage(lineage))
        return 0 if report.ok and not lineage.problems else 1
    return 0 if report.ok else 1


def add_audit_parser(subparsers) -> argparse.ArgumentParser:
    """`real-assets audit [--home DIR] [--partition KEY] [--json]`: exit 0 when every link holds, else 1."""
    p = subparsers.add_parser("audit", help="walk checkpoints and eval rows back to raw data, re-hash all")
    p.add_argument("--home", help="home folder (default $REAL_ASSETS_HOME or ./.real_assets)")
    p.add_argument(
        "--partition",
        "--strategy",
        help="audit one partition: a partition key or one dimension's value, e.g. a strategy (default: all)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument(
        "--lineage",
        metavar="PARTITION",
        help="also walk dpo_checkpoint[PARTITION] (e.g. 0|easy) back to its pairs' annotations (annotator, "
        "task, project), the generated responses and the policy version that generated them",
    )
    p.set_defaults(func=run_audit)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="real-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="materialize every asset and strategy into the home's Dagster instance")
    p.add_argument("--home", help="home folder (default $REAL_ASSETS_HOME or ./.real_assets)")
    p.add_argument("--source", help=f"one of {', '.join(source_names())} (default synthetic)")
    p.add_argument("--path", help="local file or hub dataset id for the source")
    p.add_argument("--limit", type=int, help="read at most this many input rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--column-map",
        help='table source: JSON such as {"prompt": "question", "response": "answer", "score": "rating"}',
    )
    p.add_argument("--n-prompts", type=int, help="synthetic source: number of prompts (default 120)")
    p.add_argument("--sft-epochs", type=float, help="override the reference SFT epochs")
    p.add_argument("--dpo-epochs", type=float, help="override the DPO epochs")
    p.add_argument("--seeds", type=int, help=f"seeds per strategy (default {DEFAULT_SEEDS})")
    p.add_argument(
        "--strategies",
        type=lambda text: [s.strip() for s in text.split(",") if s.strip()],
        help="only these strategies' partitions, comma-separated (default: every strategy)",
    )
    p.add_argument(
        "--skip", action="append", metavar="ASSET", help="leave this asset out of the run (repeatable)"
    )
    p.add_argument("--preset", choices=preset_names(), help="a named study set-up (see README)")
    p.add_argument(
        "--partition",
        help="only this partition of partitioned steps (a key, or a dimension's value: a strategy)",
    )
    p.add_argument(
        "--config",
        action="append",
        metavar="ASSET=JSON",
        help="a step's config fields, e.g. dpo_checkpoint='{\"beta\": 0.1}' (repeatable)",
    )
    p.add_argument(
        "--from",
        dest="start",
        metavar="ASSET",
        help="start at this asset's first step (resume after a crash; the steps before it must have run)",
    )
    p.add_argument(
        "--model-backend",
        choices=["torch", "fake"],
        help="`fake`: model steps write small stand-in checkpoints and figures instead of training, to try "
        f"the orchestration in seconds (default ${MODEL_BACKEND_ENV}, else torch)",
    )
    p.add_argument(
        "--loop",
        action="store_true",
        help="run the annotation loop instead: prompts, generation, selection before labels, simulated "
        "annotators, agreement and flip rate per strategy, DPO and eval (offline)",
    )
    _instance_argument(p)
    p.set_defaults(func=demo)

    p = _server_parser(sub, "ui", "serve the Dagster UI and daemon (dagster dev)", 3000, ui)
    _instance_argument(p)

    p = _server_parser(sub, "mlflow-ui", "serve the MLflow tracking server and UI", 5000, mlflow_ui)
    p.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")

    add_audit_parser(sub)
    for command in sub.choices.values():
        command.add_argument(
            "--debug", action="store_true", help="show the full traceback of an error or interrupt"
        )
    args = parser.parse_args(argv)
    try:
        with interrupts.handled():
            from real_assets.resources import TrackingServerUnreachable

            try:
                return args.func(args)
            except TrackingServerUnreachable as e:
                print(f"real-assets {args.command}: {e}", file=sys.stderr)
                return 2
    except interrupts.Interrupted as e:
        if args.debug:
            raise
        print(f"real-assets {args.command}: interrupted by {e.name}", file=sys.stderr)
        return e.exit_code
    except Exception as e:
        from real_assets.home_errors import describe

        line = None if args.debug else describe(e, Locations.resolve(getattr(args, "home", None)).home)
        if line is None:
            raise
        print(f"real-assets {args.command}: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
