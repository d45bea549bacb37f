"""Training domain: the SFT reference policy and one DPO checkpoint per strategy and seed.

A checkpoint is recorded in `models.checkpoints` with its file manifest and the hyperparameters and lineage
it was trained with (`training`, also `training.json` in its folder): eval reads beta from there, and each
step finds the model it builds on by the data version its input materialization names, never by time.
"""

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from real_assets.core.checkpoints import UNPARTITIONED, Checkpoint, finalize, staging_dir
from real_assets.core.lengths import format_completion, format_prompt
from real_assets.core.train_config import DpoConfig, ReferenceConfig, TrainResult, training_record
from real_assets.core.training import Reporting, train_dpo, train_reference
from real_assets.defs.common import Step, step_asset, step_config
from real_assets.defs.conditions import on_new_training_data
from real_assets.defs.data_shape import require_prompts
from real_assets.defs.ingest import raw_responses
from real_assets.defs.label_noise import measured_flip_rate
from real_assets.defs.launcher import launch_dpo
from real_assets.defs.partitions import strategy_seed_partitions
from real_assets.defs.versions import (
    CHECKPOINTS_TABLE,
    WarehouseTable,
    checkpoint_check,
    checkpoint_metadata,
    read_checkpoint_record,
)
from real_assets.resources import Compute, Home, StepRun, Warehouse, replace_rows

TRAINING_FILE = "training.json"

CHECKPOINTS = WarehouseTable(
    CHECKPOINTS_TABLE,
    ("asset", "partition", "data_version"),
    columns=(
        ("asset", "varchar not null"),
        ("partition", "varchar not null"),
        ("data_version", "varchar not null"),
        ("path", "varchar not null"),
        ("manifest", "json not null"),
        ("mlflow_run_id", "varchar"),
        ("dagster_run_id", "varchar"),
        ("created_at", "timestamp"),
        ("training", "json"),
    ),
)

ReferenceStepConfig = step_config(ReferenceConfig, "ReferenceStepConfig")
DpoStepConfig = step_config(DpoConfig, "DpoStepConfig")


def store_checkpoint(
    step: Step,
    warehouse: Warehouse,
    staging: Path,
    model_name: str,
    training: dict[str, Any],
) -> tuple[Checkpoint, str]:
    """Write the training record beside the weights, move the checkpoint to its content-addressed folder,
    record its manifest (what the audit re-hashes) and training record in `models.checkpoints`, and
    register it in MLflow; returns it and its registered model version."""
    (staging / TRAINING_FILE).write_text(json.dumps(training, indent=2, sort_keys=True))
    ckpt = finalize(staging)
    context = step.context
    asset = context.asset_key.to_user_string()
    partition = context.partition_key if context.has_partition_key else UNPARTITIONED
    with warehouse.connect() as con:
        con.execute(CHECKPOINTS.ddl())
        row = {
            "asset": asset,
            "partition": partition,
            "data_version": ckpt.data_version,
            "path": str(ckpt.path),
            "manifest": json.dumps(ckpt.manifest),
            "mlflow_run_id": step.run_id,
            "dagster_run_id": context.run_id,
            "created_at": datetime.now(UTC).replace(tzinfo=None),
            "training": json.dumps(training, sort_keys=True),
        }
        replace_rows(con, CHECKPOINTS.name, pd.DataFrame([row]), list(CHECKPOINTS.keys))
    tags = {"data_version": ckpt.data_version, "partition": partition}
    return ckpt, step.register_model(model_name, ckpt.path, tags)


def recorded_checkpoint(
    warehouse: Warehouse, asset: str, data_version: str | None, partition: str = UNPARTITIONED
) -> tuple[Path, dict[str, Any]]:
    """Folder and training record of the checkpoint with this data version (the one an input names);
    `dg.Failure` naming the asset to rematerialize when the folder is gone."""
    if not data_version:
        raise dg.Failure(f"{asset}[{partition}] has no materialization to build on: materialize it first")
    with warehouse.connect(read_only=True) as con:
        record = read_checkpoint_record(con, asset, partition, data_version)
    if record is None:
        raise dg.Failure(f"models.checkpoints has no {asset}[{partition}] with data version {data_version}")
    if not Path(record.path).is_dir():
        shown = asset if partition == UNPARTITIONED else f"{asset}[{partition}]"
        raise dg.Failure(
            f"the checkpoint folder of {shown} (data version {data_version}) is missing: {record.path}. "
            f"Rematerialize {asset} (real-assets demo --from {asset}), or restore the folder",
            allow_retries=False,
        )
    return record.path, record.training


def _log_curve(step: StepRun, prefix: str):
    def on_log(global_step: int, logs: dict[str, float]) -> None:
        step.log_metrics(
            {f"{prefix}/{k}" if "/" not in k else k: v for k, v in logs.items()}, step=global_step
        )

    return on_log


def _train_metadata(result: TrainResult) -> dict[str, Any]:
    last = result.history[-1] if result.history else {}
    return result.summary() | {"train_loss": last.get("train_loss", float("nan"))}


def checkpoint_asset(**asset_kwargs):
    """`step_asset` for a training step whose output is a checkpoint folder (recorded in
    models.checkpoints): it trains on the GPU pool, when new training data arrives."""
    return step_asset(
        kinds={"pytorch", "huggingface"},
        automation_condition=on_new_training_data(),
        metadata=checkpoint_metadata(),
        **asset_kwargs,
    )


@checkpoint_asset(
    config=ReferenceStepConfig,
    deps=[raw_responses],
)
def reference_policy(step: Step, home: Home, warehouse: Warehouse, compute: Compute) -> dg.MaterializeResult:
    """The SFT reference policy: the base causal LM fine-tuned with TRL's SFTTrainer on the chosen
    (highest-label) response of each train prompt. Safetensors under <home>/checkpoints."""
    cfg: ReferenceConfig = step.config
    require_prompts(warehouse, "train")
    with warehouse.connect(read_only=True) as con:
        train = con.execute("""
            select p.prompt, r.response, r.score, r.response_id
            from raw.responses as r join raw.prompts as p using (prompt_id)
            where p.split = 'train' order by r.prompt_id, r.score desc, r.response_id""").fetchall()
    chosen: dict[str, str] = {}
    for prompt, response, _score, _rid in train:
        chosen.setdefault(prompt, response)  # rows come best-first within a prompt
    corpus = [format_prompt(p) + format_completion(r) for p, r, _s, _i in train]
    out = staging_dir(home.checkpoints, "reference_policy", None)
    result, device = compute.run(
        train_reference,
        corpus,
        list(chosen.items()),
        cfg,
        out,
        reporting=Reporting(_log_curve(step, "sft"), step.log.info),
        models_dir=home.models,
    )
    training = training_record(
        cfg,
        max_length=result.max_length,
        max_length_source=result.max_length_source,
        base=result.extra.get("base"),
    )
    ckpt, version = store_checkpoint(step, warehouse, out, "real-assets-reference", training)
    metadata = {
        "checkpoint": dg.MetadataValue.path(str(ckpt.path)),
        "sft_examples": len(chosen),
        "device": device,
        "base_model": cfg.base_model,
        "lora_r": cfg.lora_r,
        **_train_metadata(result),
        "registered_model_version": version,
    }
    return step.finish(ckpt.data_version, metadata)


def read_selected_pairs(warehouse: Warehouse, strategy: str, seed: int):
    """(prompt, chosen, rejected) texts of one strategy and seed's selected pairs, in key order."""
    with warehouse.connect(read_only=True) as con:
        return con.execute(
            """
            select s.prompt_id, s.chosen_id, s.rejected_id, p.prompt, c.response as chosen,
                   r.response as rejected
            from selection.selected_pairs as s
            join raw.prompts as p using (prompt_id)
            join raw.responses as c on c.response_id = s.chosen_id
            join raw.responses as r on r.response_id = s.rejected_id
            where s.strategy = ? and s.seed = ? order by s.prompt_id, s.chosen_id, s.rejected_id""",
            [strategy, seed],
        ).df()


def _measured_flip_rate(warehouse: Warehouse, strategy: str) -> float:
    """The label-flip rate `annotation_quality` measured for a strategy (0 where never measured), below the
    robust loss's limit of 0.5."""
    return min(measured_flip_rate(warehouse, strategy) or 0.0, 0.49)


@checkpoint_asset(
    config=DpoStepConfig,
    deps=[dg.AssetKey("selected_pairs"), reference_policy],
    partitions_def=strategy_seed_partitions,
)
def dpo_checkpoint(step: Step, home: Home, warehouse: Warehouse, compute: Compute) -> dg.MaterializeResult:
    """TRL DPO from the reference policy version its input names, on one strategy and seed's selected
    pairs; the curve (loss, rewards/margins, rewards/accuracies, logps/...) is logged to MLflow."""
    cfg: DpoConfig = step.config
    strategy, seed, upstream = step.strategy, step.seed, step.upstream
    if cfg.loss_type == "robust" and cfg.label_smoothing is None:
        cfg = dataclasses.replace(cfg, label_smoothing=_measured_flip_rate(warehouse, strategy))
    reference_version = upstream.get("reference_policy")
    reference, _ = recorded_checkpoint(warehouse, "reference_policy", reference_version)
    pairs = read_selected_pairs(warehouse, strategy, seed)
    if pairs.empty:
        raise dg.Failure(f"selected_pairs[{step.context.partition_key}] is empty")
    dataset_digest = step.log_dataset(
        pairs, name=f"selected_pairs[{step.context.partition_key}]", source=warehouse.describe()
    )
    rows = list(zip(pairs["prompt"], pairs["chosen"], pairs["rejected"]))
    out = staging_dir(home.checkpoints, "dpo_checkpoint", step.context.partition_key)
    reporting = Reporting(_log_curve(step, "train"), step.log.info)
    if compute.dpo_launcher == "accelerate":
        result, device = launch_dpo(step.context, compute, reference, rows, cfg, seed, out, reporting.on_log)
    else:
        result, device = compute.run(train_dpo, reference, rows, cfg, seed, out, reporting=reporting)
    training = training_record(
        cfg,
        seed=seed,
        strategy=strategy,
        max_length=result.max_length,
        max_length_source=result.max_length_source,
        reference_version=reference_version,
        selected_pairs_version=upstream.get("selected_pairs"),
    )
    ckpt, version = store_checkpoint(step, warehouse, out, f"real-assets-dpo-{strategy}", training)
    last = next((h for h in reversed(result.history) if "rewards/margins" in h), {})
    metadata = {
        "checkpoint": dg.MetadataValue.path(str(ckpt.path)),
        "reference_version": reference_version,
        "reference_checkpoint": dg.MetadataValue.path(str(reference)),
        "beta": cfg.beta,
        "loss_type": cfg.loss_type,
        "label_smoothing": cfg.label_smoothing or 0.0,
        "lora_r": cfg.lora_r,
        "seed": seed,
        "pairs": len(rows),
        "device": device,
        "dataset_digest": dataset_digest,
        **_train_metadata(result),
        "final/loss": last.get("loss", float("nan")),
        "final/rewards_margins": last.get("rewards/margins", float("nan")),
        "final/rewards_accuracies": last.get("rewards/accuracies", float("nan")),
        "registered_model_version": version,
    }
    return step.finish(ckpt.data_version, metadata)


checkpoint_checks = [checkpoint_check(reference_policy), checkpoint_check(dpo_checkpoint)]
