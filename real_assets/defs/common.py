"""What every asset shares: pools, step configs, and the step: the MLflow run of a materialization with
the versions of its inputs, closed by its `MaterializeResult`."""

import contextlib
import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import pydantic

from real_assets.defs.partitions import partition_dims, partition_tag
from real_assets.resources import StepRun, Tracking

WAREHOUSE_POOL = "warehouse"
"""Assets that write the DuckDB warehouse: DuckDB allows one writing process per file."""
GPU_POOL = "gpu"
"""Assets that load models on the accelerator: two must not share a GPU by accident."""


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric setting accepts: above `low` (or at it, unless `low_open`), below `high` (or
    at it, unless `high_open`). None (a setting left unset) is always accepted."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}"


POSITIVE = Range(0, low_open=True)
AT_LEAST_ONE = Range(1)
NOT_NEGATIVE = Range(0)
SHARE = Range(0, 1, low_open=True)
MIN_PROMPT_TOKENS = 8
"""`max_length` leaves at least this many tokens of prompt beside `min_response_tokens` of response."""

SETTING_RANGES: dict[str, Range] = {
    # training (SFT and DPO)
    "learning_rate": POSITIVE,
    "epochs": POSITIVE,
    "beta": POSITIVE,
    "batch_size": AT_LEAST_ONE,
    "max_length": AT_LEAST_ONE,
    "min_response_tokens": AT_LEAST_ONE,
    "logging_steps": AT_LEAST_ONE,
    "vocab_size": AT_LEAST_ONE,
    "n_layer": AT_LEAST_ONE,
    "n_head": AT_LEAST_ONE,
    "n_embd": AT_LEAST_ONE,
    "n_positions": AT_LEAST_ONE,
    "seed": NOT_NEGATIVE,
    # LoRA (lora_r 0: full fine-tuning)
    "lora_r": NOT_NEGATIVE,
    "lora_alpha": POSITIVE,
    # selection
    "keep_fraction": SHARE,
    # eval
    "samples_per_prompt": AT_LEAST_ONE,
    "max_new_tokens": AT_LEAST_ONE,
    "temperature": POSITIVE,
    "max_eval_pairs": AT_LEAST_ONE,
    "max_eval_prompts": AT_LEAST_ONE,
    "min_eval_pairs": AT_LEAST_ONE,
    # ingest
    "limit": AT_LEAST_ONE,
    "n_prompts": AT_LEAST_ONE,
    "test_fraction": Range(0, 1, high_open=True),
    "max_chars": AT_LEAST_ONE,
    "max_responses_per_prompt": Range(2),
}
"""The allowed range of every numeric step setting, by field name (a field means the same in every step
that has it). Every step config checks its fields against it when it is built: before any step of
`real-assets demo` runs (`check_step_config`), and when a run launched from the Dagster UI starts the step.
"""


def range_errors(values: Any) -> list[str]:
    """`field = value: must be <range>` for each setting of a config outside its range in
    `SETTING_RANGES`, and for a `max_length` too short for `min_response_tokens` and a minimal prompt."""
    errors = []
    fields = values if isinstance(values, dict) else dict(values)
    for field, value in fields.items():
        allowed = SETTING_RANGES.get(field)
        if allowed is None or value is None or isinstance(value, bool):
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, int | float) and item not in allowed:
                each = " each" if isinstance(value, list | tuple) else ""
                errors.append(f"{field} = {item!r}: must{each} be {allowed}")
    max_length, response = fields.get("max_length"), fields.get("min_response_tokens")
    if (
        isinstance(max_length, int)
        and isinstance(response, int)
        and response >= 1
        and max_length < response + MIN_PROMPT_TOKENS
    ):
        errors.append(
            f"max_length = {max_length}: must be >= min_response_tokens + {MIN_PROMPT_TOKENS} "
            f"(a minimal prompt) = {response + MIN_PROMPT_TOKENS}"
        )
    return errors


class SettingOutOfRange(ValueError):
    """A step setting outside its allowed range (`SETTING_RANGES`)."""


class RangeChecked(pydantic.BaseModel):
    """A config whose numeric fields are checked against `SETTING_RANGES` when it is built."""

    @pydantic.model_validator(mode="after")
    def _in_range(self):
        errors = range_errors({name: getattr(self, name) for name in type(self).model_fields})
        if errors:
            raise SettingOutOfRange("; ".join(errors))
        return self


def check_step_config(assets_def: dg.AssetsDefinition, values: dict) -> None:
    """Build the step's config from `values` as the step itself will: `SettingOutOfRange` (one line, naming
    each field, its value and its range) for a value out of range; other type errors are Dagster's."""
    config_class = _config_class(assets_def)
    if config_class is None or not issubclass(config_class, RangeChecked):
        return
    defaults = {
        name: field.get_default(call_default_factory=True)
        for name, field in config_class.model_fields.items()
    }
    errors = range_errors(defaults | values)
    if errors:
        raise SettingOutOfRange(f"{assets_def.key.to_user_string()}: {'; '.join(errors)}")


def _config_class(assets_def: dg.AssetsDefinition) -> type | None:
    function = getattr(assets_def.op.compute_fn, "decorated_fn", None)
    parameter = inspect.signature(function).parameters.get("config") if function else None
    return parameter.annotation if parameter is not None and isinstance(parameter.annotation, type) else None


class StepConfig(dg.Config, RangeChecked):
    """A step's Dagster config, generated by `step_config` from the dataclass `core/` owns."""

    def to_core(self):
        """The core dataclass with these values."""
        return type(self).__core_class__(**self.model_dump())


def step_config(core_class: type, name: str) -> type[StepConfig]:
    """The Dagster config of a step, generated from the plain dataclass `core/` owns (one set of fields,
    one set of defaults), its numeric fields checked against `SETTING_RANGES`; `config.to_core()` gives
    the dataclass back."""
    hints = typing.get_type_hints(core_class)
    fields = {
        f.name: (
            hints[f.name],
            f.default
            if f.default_factory is dataclasses.MISSING
            else pydantic.Field(default_factory=f.default_factory),
        )
        for f in dataclasses.fields(core_class)
    }
    model = pydantic.create_model(
        name, __base__=StepConfig, __doc__=core_class.__doc__, __module__=core_class.__module__, **fields
    )
    model.__core_class__ = core_class
    return model


def latest_materialization(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None
) -> dg.EventLogRecord | None:
    """The newest materialization record of an asset (or one partition of it)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return records[0] if records else None


def data_version_of(record: dg.EventLogRecord | None) -> str | None:
    if record is None or record.asset_materialization is None:
        return None
    return record.asset_materialization.tags.get("dagster/data_version")


def upstream_versions(context: dg.AssetExecutionContext) -> dict[str, str]:
    """The data version of each upstream asset this materialization read (same partition if partitioned)."""
    out = {}
    partition = context.partition_key if context.has_partition_key else None
    for key in sorted(context.assets_def.asset_deps[context.asset_key], key=lambda k: k.to_user_string()):
        name = key.to_user_string()
        # The same partition of a partitioned upstream; else its latest unpartitioned materialization.
        record = latest_materialization(context.instance, key, partition) if partition else None
        if record is None:
            record = latest_materialization(context.instance, key)
        if record is not None and record.partition_key is not None and record.partition_key != partition:
            # An unpartitioned asset reads every partition of a partitioned upstream.
            for upstream_partition in sorted(context.instance.get_materialized_partitions(key)):
                version = data_version_of(latest_materialization(context.instance, key, upstream_partition))
                if version:
                    out[f"{name}/{partition_tag(upstream_partition)}"] = version
            continue
        version = data_version_of(record)
        if version:
            out[name] = version
    return out


class Step(StepRun):
    """One materialization in progress: its Dagster `context` (and `log`), its MLflow run, the data
    versions of the inputs it reads (`upstream`), its config as the dataclass `core/` receives (`config`;
    None without one) and its partition's dimensions (`partition`, with `strategy` and `seed` on the
    strategy x seed grid)."""

    def __init__(self, context, tracking: Tracking, run: StepRun, upstream, config, partition):
        super().__init__(run.client, run.run_id, run.experiment_id)
        self.context: dg.AssetExecutionContext = context
        self.log = context.log
        self.tracking = tracking
        self.upstream: dict[str, str] = upstream
        self.config = config
        self.partition: dict[str, str] = partition

    @property
    def strategy(self) -> str:
        return self.partition["strategy"]

    @property
    def seed(self) -> int:
        return int(self.partition["seed"])

    def finish(self, data_version: str, metadata: dict[str, Any]) -> dg.MaterializeResult:
        """Close the loop between Dagster and MLflow: the MLflow run gets the data version and the numeric
        metadata as metrics, the materialization gets the MLflow run id and link."""
        self.set_tags({"dagster.data_version": data_version})
        self.log_metrics(
            {k: v for k, v in metadata.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        )
        return dg.MaterializeResult(
            data_version=dg.DataVersion(data_version),
            metadata={
                **metadata,
                "data_version": data_version,
                "mlflow_run_id": self.run_id,
                "mlflow_run": dg.MetadataValue.url(self.tracking.run_url(self)),
            },
        )


@contextlib.contextmanager
def tracked_step(
    context: dg.AssetExecutionContext,
    tracking: Tracking,
    config: StepConfig | dg.Config | None = None,
) -> Iterator[Step]:
    """The MLflow run of this materialization, tagged with the data versions of the inputs it reads,
    with its config and partition dimensions as params."""
    versions = upstream_versions(context)
    partition = partition_dims(context)
    with tracking.step(context, versions) as run:
        params = (config.model_dump() if config is not None else {}) | partition
        if params:
            run.log_params(params)
        core = config.to_core() if isinstance(config, StepConfig) else config
        yield Step(context, tracking, run, versions, core, partition)


def step_asset(
    *, config: type[dg.Config] | None = None, **asset_kwargs
) -> Callable[[Callable[..., dg.MaterializeResult]], dg.AssetsDefinition]:
    """`@dg.asset` for one step of the graph, run inside its MLflow run (`tracked_step`).

    The decorated function takes `step` (the `Step`: its config as `core/` receives it, upstream versions,
    partition, Dagster context) and then the resources it uses, named and typed as in any asset
    (`warehouse: Warehouse`). Dagster sees `context`, `config` (the Dagster `Config` given here),
    `tracking` and those resources; the asset's name, module and docstring are the function's. Its pool
    follows from its kinds: a step that runs torch models waits for the GPU pool, any other for the
    warehouse's."""
    asset_kwargs.setdefault(
        "pool", GPU_POOL if "pytorch" in asset_kwargs.get("kinds", ()) else WAREHOUSE_POOL
    )

    def decorate(body: Callable[..., dg.MaterializeResult]) -> dg.AssetsDefinition:
        resource_params = list(inspect.signature(body, eval_str=True).parameters.values())[1:]

        if inspect.isgeneratorfunction(body):  # an asset that also yields check results

            def materialize(context, tracking, config=None, **resources):
                with tracked_step(context, tracking, config) as step:
                    yield from body(step, **resources)

        else:

            def materialize(context, tracking, config=None, **resources):
                with tracked_step(context, tracking, config) as step:
                    return body(step, **resources)

        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [inspect.Parameter("context", kind, annotation=dg.AssetExecutionContext)]
        if config is not None:
            params.append(inspect.Parameter("config", kind, annotation=config))
        params += [inspect.Parameter("tracking", kind, annotation=Tracking), *resource_params]
        # Dagster reads the parameters (context, config, resources) off `__signature__`; code_digest
        # reads `__annotations__` and follows `body` through the closure.
        materialize.__signature__ = inspect.Signature(params, return_annotation=dg.MaterializeResult)
        materialize.__annotations__ = {p.name: p.annotation for p in params}
        materialize.__name__ = materialize.__qualname__ = body.__name__
        materialize.__module__, materialize.__doc__ = body.__module__, body.__doc__
        return dg.asset(**asset_kwargs)(materialize)

    return decorate
