"""Training domain: the SFT reference policy and one DPO checkpoint per selection strategy."""

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd

from real_assets.core.checkpoints import UNPARTITIONED, Checkpoint, finalize, staging_dir
from real_assets.core.policy import (
    BUILTIN_BASE,
    BaseModelConfig,
    TrainConfig,
    build_base,
    format_completion,
    format_prompt,
    train_dpo,
    train_sft,
)
from real_assets.defs.common import GPU_POOL, finish, strategy_partitions, upstream_versions
from real_assets.defs.conditions import on_new_training_data
from real_assets.defs.ingest import raw_responses
from real_assets.defs.selection import selected_pairs
from real_assets.defs.versions import checkpoint_check, checkpoint_metadata
from real_assets.resources import Compute, StepRun, Tracking, Warehouse, replace_rows
from real_assets.settings import checkpoints_dir

_DDL = """
create table if not exists models.checkpoints (
    asset varchar not null, partition varchar not null, data_version varchar not null, path varchar not null,
    manifest json not null, mlflow_run_id varchar, dagster_run_id varchar,
    created_at timestamp
)
"""


class ReferenceConfig(dg.Config):
    """The base causal LM and its SFT. `base_model`: `builtin:tiny-gpt2` (built from a config, tokenizer
    trained on the corpus) or any AutoModelForCausalLM id or local path."""

    base_model: str = BUILTIN_BASE
    trust_remote_code: bool = False
    vocab_size: int = 1024
    n_layer: int = 2
    n_embd: int = 128
    learning_rate: float = 2e-3
    epochs: float = 12.0
    batch_size: int = 16
    max_length: int = 192
    seed: int = 0


class DpoConfig(dg.Config):
    """TRL DPO settings (one config object, as in TRL's DPOConfig)."""

    beta: float = 0.2
    learning_rate: float = 5e-5
    epochs: float = 2.0
    batch_size: int = 16
    max_length: int = 192
    seed: int = 0


def store_checkpoint(
    context: dg.AssetExecutionContext, warehouse: Warehouse, step: StepRun, staging: Path, model_name: str
) -> tuple[Checkpoint, str]:
    """Move a trained checkpoint to its content-addressed folder, record its file manifest (what the
    audit re-hashes) in `models.checkpoints`, and register it in MLflow; returns it and its model version."""
    ckpt = finalize(staging)
    asset = context.asset_key.to_user_string()
    partition = context.partition_key if context.has_partition_key else UNPARTITIONED
    with warehouse.connect() as con:
        con.execute(_DDL)
        row = {
            "asset": asset,
            "partition": partition,
            "data_version": ckpt.data_version,
            "path": str(ckpt.path),
            "manifest": json.dumps(ckpt.manifest),
            "mlflow_run_id": step.run_id,
            "dagster_run_id": context.run_id,
            "created_at": datetime.now(UTC).replace(tzinfo=None),
        }
        replace_rows(con, "models.checkpoints", pd.DataFrame([row]), ["asset", "partition", "data_version"])
    tags = {"data_version": ckpt.data_version, "partition": partition}
    return ckpt, step.register_model(model_name, ckpt.path, tags)


def latest_checkpoint(warehouse: Warehouse, asset: str, partition: str = UNPARTITIONED) -> Path:
    """Folder of the newest recorded checkpoint of an asset partition."""
    with warehouse.connect(read_only=True) as con:
        row = con.execute(
            "select path from models.checkpoints where asset = ? and partition = ? "
            "order by created_at desc limit 1",
            [asset, partition],
        ).fetchone()
    if row is None:
        raise dg.Failure(f"no checkpoint of {asset}[{partition}] recorded: materialize it first")
    return Path(row[0])


def _train_config(config: dg.Config) -> TrainConfig:
    """The trainer settings of an asset config: the fields it shares with `TrainConfig`."""
    return TrainConfig(**config.model_dump(include=set(TrainConfig.__dataclass_fields__)))


def _log_curve(step: StepRun, prefix: str):
    def on_log(global_step: int, logs: dict[str, float]) -> None:
        step.log_metrics(
            {f"{prefix}/{k}" if "/" not in k else k: v for k, v in logs.items()}, step=global_step
        )

    return on_log


@dg.asset(
    group_name="training",
    kinds={"pytorch", "huggingface"},
    deps=[raw_responses],
    pool=GPU_POOL,
    automation_condition=on_new_training_data(),
    metadata=checkpoint_metadata(),
    description="The SFT reference policy: the base causal LM fine-tuned with TRL's SFTTrainer on the "
    "chosen (highest-label) response of each train prompt. Safetensors under <home>/checkpoints.",
)
def reference_policy(
    context: dg.AssetExecutionContext,
    config: ReferenceConfig,
    warehouse: Warehouse,
    compute: Compute,
    tracking: Tracking,
) -> dg.MaterializeResult:
    with tracking.step(context, upstream_versions(context)) as step:
        step.log_params(config.model_dump())
        with warehouse.connect(read_only=True) as con:
            train = con.execute("""
                select p.prompt, r.response, r.score, r.response_id
                from raw.responses as r join raw.prompts as p using (prompt_id)
                where p.split = 'train' order by r.prompt_id, r.score desc, r.response_id""").fetchall()
        chosen: dict[str, str] = {}
        for prompt, response, _score, _rid in train:
            chosen.setdefault(prompt, response)  # rows come best-first within a prompt
        rows = [{"prompt": format_prompt(p), "completion": format_completion(r)} for p, r in chosen.items()]
        corpus = [format_prompt(p) + format_completion(r) for p, r, _s, _i in train]
        device = compute.choice()
        model, tokenizer = build_base(
            BaseModelConfig(
                model=config.base_model,
                vocab_size=config.vocab_size,
                n_layer=config.n_layer,
                n_embd=config.n_embd,
                trust_remote_code=config.trust_remote_code,
                seed=config.seed,
            ),
            corpus,
        )
        out = staging_dir(checkpoints_dir(), "reference_policy", None)
        train_cfg = _train_config(config)
        history = train_sft(model, tokenizer, rows, train_cfg, out, device, _log_curve(step, "sft"))
        ckpt, version = store_checkpoint(context, warehouse, step, out, "real-assets-reference")
        metadata = {
            "checkpoint": dg.MetadataValue.path(str(ckpt.path)),
            "sft_examples": len(rows),
            "device": device.device,
            "train_loss": history[-1].get("train_loss", float("nan")) if history else float("nan"),
            "registered_model_version": version,
        }
        return finish(context, tracking, step, ckpt.data_version, metadata)


@dg.asset(
    group_name="training",
    kinds={"pytorch", "huggingface"},
    deps=[selected_pairs, reference_policy],
    partitions_def=strategy_partitions,
    pool=GPU_POOL,
    automation_condition=on_new_training_data(),
    metadata=checkpoint_metadata(),
    description="TRL DPO from the reference policy on one strategy's selected pairs; the curve "
    "(loss, rewards/margins, rewards/accuracies, logps/...) is logged to MLflow.",
)
def dpo_checkpoint(
    context: dg.AssetExecutionContext,
    config: DpoConfig,
    warehouse: Warehouse,
    compute: Compute,
    tracking: Tracking,
) -> dg.MaterializeResult:
    strategy = context.partition_key
    with tracking.step(context, upstream_versions(context)) as step:
        step.log_params(config.model_dump() | {"strategy": strategy})
        reference = latest_checkpoint(warehouse, "reference_policy")
        with warehouse.connect(read_only=True) as con:
            pairs = con.execute(
                """
                select s.prompt_id, s.chosen_id, s.rejected_id, p.prompt, c.response as chosen,
                       r.response as rejected
                from selection.selected_pairs as s
                join raw.prompts as p using (prompt_id)
                join raw.responses as c on c.response_id = s.chosen_id
                join raw.responses as r on r.response_id = s.rejected_id
                where s.strategy = ? order by s.prompt_id, s.chosen_id, s.rejected_id""",
                [strategy],
            ).df()
        if pairs.empty:
            raise dg.Failure(f"selected_pairs[{strategy}] is empty")
        dataset_digest = step.log_dataset(
            pairs, name=f"selected_pairs[{strategy}]", source=warehouse.describe()
        )
        rows = [
            {"prompt": format_prompt(p), "chosen": format_completion(c), "rejected": format_completion(r)}
            for p, c, r in zip(pairs["prompt"], pairs["chosen"], pairs["rejected"])
        ]
        device = compute.choice()
        out = staging_dir(checkpoints_dir(), "dpo_checkpoint", strategy)
        train_cfg = _train_config(config)
        history = train_dpo(reference, rows, train_cfg, out, device, _log_curve(step, "train"))
        ckpt, version = store_checkpoint(context, warehouse, step, out, f"real-assets-dpo-{strategy}")
        last = next((h for h in reversed(history) if "rewards/margins" in h), {})
        metadata = {
            "checkpoint": dg.MetadataValue.path(str(ckpt.path)),
            "reference_checkpoint": dg.MetadataValue.path(str(reference)),
            "pairs": len(rows),
            "device": device.device,
            "dataset_digest": dataset_digest,
            "final/loss": last.get("loss", float("nan")),
            "final/rewards_margins": last.get("rewards/margins", float("nan")),
            "final/rewards_accuracies": last.get("rewards/accuracies", float("nan")),
            "registered_model_version": version,
        }
        return finish(context, tracking, step, ckpt.data_version, metadata)


checkpoint_checks = [checkpoint_check(reference_policy), checkpoint_check(dpo_checkpoint)]
