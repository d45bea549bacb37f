"""The demo runner: every asset of the graph, in topological order, each partition once, into a persistent
Dagster instance; one updating line per step, fed by the progress lines the steps log."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import dagster as dg

from real_assets import interrupts
from real_assets.core.heap import freeze_imported
from real_assets.core.progress import parse_progress
from real_assets.defs.common import check_step_config
from real_assets.home_errors import describe_error_info
from real_assets.recovery import worker_tags

LABEL_WIDTH = 32
PLAIN_EVERY_S = 15.0
"""Without a terminal, a step's progress is printed at most this often (a log file stays short)."""


def demo_steps(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    only: str | None = None,
    seeds: int | None = None,
    start: str | None = None,
    strategies: Sequence[str] | None = None,
    skip: Sequence[str] = (),
) -> list[tuple[dg.AssetKey, str | None]]:
    """(asset key, partition key or None) of every materializable asset in topological order of the
    graph; a partitioned asset once per partition key of its own partitions definition (with `only`, just
    the keys equal to it or with it as one dimension's value, e.g. one strategy; with `seeds`, only the
    keys whose `seed` dimension is below it; with `strategies`, only the keys of those strategies; assets
    named in `skip` left out; with `start`, an asset's name, from its first step on)."""
    graph = defs.resolve_asset_graph()
    steps: list[tuple[dg.AssetKey, str | None]] = []
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        if not node.is_materializable or key.to_user_string() in skip:
            continue
        partitions = node.partitions_def
        keys = partitions.get_partition_keys(dynamic_partitions_store=instance) if partitions else [None]
        if partitions and only is not None:
            keys = [k for k in keys if only == k or only in k.split("|")]
        if seeds is not None and isinstance(partitions, dg.MultiPartitionsDefinition):
            keys = [k for k in keys if int(k.keys_by_dimension.get("seed", 0)) < seeds]
        if strategies is not None and isinstance(partitions, dg.MultiPartitionsDefinition):
            keys = [k for k in keys if _strategy_of(k.keys_by_dimension) in strategies]
        steps += [(key, partition) for partition in keys]
    if start is not None:
        names = [key.to_user_string() for key, _ in steps]
        if start not in names:
            raise ValueError(
                f"no step materializes {start!r}; the steps are: {', '.join(dict.fromkeys(names))}"
            )
        steps = steps[names.index(start) :]
    return steps


def _strategy_of(dimensions: dict[str, str]) -> str:
    """The strategy of a partition: its `strategy` dimension, or the strategy of a budget `point`."""
    return dimensions.get("strategy") or dimensions.get("point", "").split("@")[0]


def materialize(
    selection: Sequence[str | dg.AssetKey],
    instance: dg.DagsterInstance | None = None,
    partition: str | None = None,
    ops: dict[str, dict] | None = None,
    resources: dict | None = None,
    home: str | Path | None = None,
    **kwargs,
) -> dg.ExecuteInProcessResult:
    """Materialize these assets of the code location (with their checks) in this process, with the
    resources of `home` (`Locations.resolve(home)`): `ops` maps an asset to its config, `resources`
    replaces some of them; other keywords (`tags`, `raise_on_error`, `run_config` entries such as
    `loggers`) go to `dg.materialize`."""
    from real_assets.definitions import definitions
    from real_assets.settings import Locations

    defs = definitions(Locations.resolve(home))

    run_config = {"ops": {op: {"config": config} for op, config in (ops or {}).items()}}
    run_config |= kwargs.pop("run_config", {})
    return dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=[dg.AssetKey.from_user_string(s) if isinstance(s, str) else s for s in selection],
        partition_key=partition,
        instance=instance,
        resources={**defs.resources, **(resources or {})},
        run_config=run_config,
        **kwargs,
    )


def describe(fields: dict) -> str:
    """`done/total unit (pct) rate/s eta Ns loss=...` of a parsed progress line."""
    done, total, unit = fields.get("done"), fields.get("total"), fields.get("unit", "")
    text = f"{fields.get('task', '')} {done}{f'/{total}' if total else ''} {unit}".strip()
    if total:
        text += f" ({100 * done / total:.0f}%)"
    if fields.get("rate"):
        text += f" {fields['rate']:.1f}/s"
    if fields.get("eta_s") is not None:
        text += f" eta {fields['eta_s']:.0f}s"
    known = {"task", "done", "total", "unit", "rate", "eta_s", "elapsed_s"}
    text += "".join(
        f" {k}={v:.4g}" for k, v in fields.items() if k not in known and isinstance(v, int | float)
    )
    return text


class StepLine:
    """One line per step. On a terminal the line is rewritten in place (`\\r`) with the latest progress;
    otherwise progress is printed as plain lines, at most every `every_s` seconds per step."""

    def __init__(
        self, stream: TextIO, tty: bool | None = None, every_s: float = PLAIN_EVERY_S, clock=time.monotonic
    ):
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.every_s = every_s
        self.clock = clock
        self.label = ""
        self._last: float | None = None

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def start(self, label: str) -> None:
        self.label, self._last = label, None
        if self.tty:
            self._write(f"  {label:<{LABEL_WIDTH}} ")

    def progress(self, fields: dict) -> None:
        now = self.clock()
        if self.tty:
            self._write(f"\r  {self.label:<{LABEL_WIDTH}} {describe(fields)}\x1b[K")
        elif self._last is None or now - self._last >= self.every_s:
            self._last = now
            self._write(f"  {self.label:<{LABEL_WIDTH}} {describe(fields)}\n")

    def finish(self, text: str) -> None:
        prefix = "\r" if self.tty else ""
        self._write(f"{prefix}  {self.label:<{LABEL_WIDTH}} {text}{chr(27) + '[K' if self.tty else ''}\n")


class _ProgressHandler(logging.Handler):
    def __init__(self, on_progress: Callable[[dict], None]):
        super().__init__(logging.INFO)
        self.on_progress = on_progress

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        fields = parse_progress(meta.get("orig_message") or record.getMessage())
        if fields is not None:
            self.on_progress(fields)


def progress_logger(on_progress: Callable[[dict], None]) -> dg.LoggerDefinition:
    """A Dagster logger that passes the progress lines of a run to `on_progress` and prints nothing else
    (every message stays in the run's own log in the instance)."""

    @dg.logger(description="progress lines of the demo's steps")
    def _progress(_init_context) -> logging.Logger:
        log = logging.getLogger("real_assets.demo.progress")
        log.handlers = [_ProgressHandler(on_progress)]
        log.setLevel(logging.INFO)
        log.propagate = False
        return log

    return _progress


def failure_summary(result: dg.ExecuteInProcessResult, home: Path) -> str:
    """The error that failed a run, once: the step, the user's exception (not Dagster's wrappers around
    it), where it was raised (not for a `dg.Failure` or a store of the home, whose message says what to
    do), and where to find the full log."""
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE":
            continue
        error = event.step_failure_data.error
        while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
            error = error.cause
        log = f"  full log: run {result.run_id} in the Dagster UI (real-assets ui)"
        store = describe_error_info(event.step_failure_data.error, home)
        if store is not None:
            return f"error in {event.step_key}: {store}\n{log}"
        where = error.stack[-1].strip().splitlines()[0] if error.stack else "?"
        head, _, rest = error.message.strip().partition(": ")
        message = rest if rest and head.endswith(error.cls_name or "\0") else error.message.strip()
        if error.cls_name == "Failure":
            return f"error in {event.step_key}: {message}\n{log}"
        return f"error in {event.step_key}: {error.cls_name}: {message}\n  raised {where}\n{log}"
    return f"run {result.run_id} failed; its log is in the Dagster UI (real-assets ui)"


def run_steps(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    ops_config: dict[str, dict],
    stream: TextIO | None = None,
    only: str | None = None,
    seeds: int | None = None,
    start: str | None = None,
    strategies: Sequence[str] | None = None,
    skip: Sequence[str] = (),
) -> bool:
    """Materialize every step of the graph (`demo_steps`), one run each; stop at the first failure and
    print its error once (to stderr). Returns whether every step succeeded. Raises ValueError for a
    `start` that names no step, `dg.DagsterInvalidConfigError` for config that does not fit a step and
    `SettingOutOfRange` for a value out of its range, before any step runs; `StepInterrupted` on SIGINT
    or SIGTERM (the runs it leaves are for the caller to fail: `recovery.fail_runs_of_this_process`)."""
    line = StepLine(stream or sys.stdout)  # looked up now: a caller may have replaced sys.stdout
    job = dg.Definitions.merge(
        defs, dg.Definitions(loggers={"progress": progress_logger(line.progress)})
    ).resolve_implicit_global_asset_job_def()
    steps = demo_steps(defs, instance, only, seeds, start, strategies, skip)
    dg.validate_run_config(job, {"ops": ops_config, "loggers": {"progress": {}}})  # before any step runs
    for name, op in ops_config.items():
        check_step_config(defs.get_assets_def(dg.AssetKey.from_user_string(name)), op.get("config", {}))
    label = None
    try:
        for key, partition in steps:
            name = key.to_user_string()
            label = f"{name}[{partition}]" if partition else name
            line.start(label)
            freeze_imported()  # what the steps so far imported lives as long as the demo (core.heap)
            started = time.perf_counter()
            result = job.execute_in_process(
                instance=instance,
                asset_selection=[key],
                partition_key=partition,
                run_config={
                    "ops": {op: config for op, config in ops_config.items() if op == name},
                    "loggers": {"progress": {}},
                },
                tags={"real_assets/launched_by": "demo", **worker_tags()},
                raise_on_error=False,
            )
            signum = interrupts.received()  # Dagster may have taken the signal without failing the run
            if signum is not None or (not result.success and _was_interrupted(result)):
                raise interrupts.Interrupted(signum or signal.SIGINT)
            if not result.success:
                line.finish("FAILED")
                home = Path(defs.resources["home"].path)
                print(failure_summary(result, home), file=sys.stderr, flush=True)
                return False
            line.finish(f"{time.perf_counter() - started:5.1f} s  run {result.run_id[:8]}")
            label = None
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError) as e:
        signum = e.signum if isinstance(e, interrupts.Interrupted) else interrupts.received()
        if label is not None:
            line.finish("INTERRUPTED")
        raise StepInterrupted(signum or signal.SIGINT, label) from None
    return True


class StepInterrupted(interrupts.Interrupted):
    """The demo received SIGINT or SIGTERM; `step` is the step it was in (None: between steps)."""

    def __init__(self, signum: int, step: str | None):
        super().__init__(signum)
        self.step = step


def _was_interrupted(result: dg.ExecuteInProcessResult) -> bool:
    """Whether a step of this run failed because Dagster raised an interrupt in it."""
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.step_failure_data.error
            while error is not None:
                if error.cls_name in ("DagsterExecutionInterruptedError", "KeyboardInterrupt", "Interrupted"):
                    return True
                error = error.cause
    return False
