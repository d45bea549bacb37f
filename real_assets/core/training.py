"""SFT and DPO with TRL on rows we tokenize and fit ourselves (`core.lengths`), full weights or a LoRA
adapter (`core.models`). Every function takes and returns plain paths, rows and numbers.

torch, transformers, datasets, peft and TRL are imported inside the functions that use them: the code
location imports this module for its configs, and every Dagster process (code server, run worker) would
otherwise pay seconds of imports before its first step.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from real_assets.core.device import DeviceChoice, release_cuda_memory
from real_assets.core.heap import freeze_imported
from real_assets.core.lengths import choose_max_length, context_window, encoded_length, fit
from real_assets.core.models import build_base, checkpoint_parent, load_merged, load_tokenizer, save_policy
from real_assets.core.progress import Progress, Report
from real_assets.core.train_config import DpoConfig, ReferenceConfig, TrainResult


@dataclasses.dataclass(frozen=True)
class Reporting:
    """Where a training run reports: `on_log(step, metrics)` receives the trainer's logged metrics (a
    curve for MLflow), `report` the progress lines, at most every `every_s` seconds."""

    on_log: Callable[[int, dict[str, float]], None] | None = None
    report: Report | None = None
    every_s: float = 3.0


class _TrainingLog:
    """The trainer's logged metrics step by step (forwarded to `on_log`), and progress lines (done/total
    steps, rate, ETA, latest loss) through `core.progress.Progress`; a trainer callback once made by
    `_training_log`."""

    def __init__(self, task: str, reporting: Reporting):
        self.rows: list[dict[str, float]] = []
        self.forward = reporting.on_log
        self.progress = Progress(task, None, reporting.report, unit="steps", every_s=reporting.every_s)

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress.total = state.max_steps
        self.progress.update(done=0)

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(done=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        numeric = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
        self.rows.append({"step": state.global_step, **numeric})
        if "loss" in numeric:
            self.progress.extras["loss"] = numeric["loss"]
        if self.forward is not None and numeric:
            self.forward(state.global_step, numeric)


def _training_log(task: str, reporting: Reporting) -> _TrainingLog:
    from transformers import TrainerCallback

    class TrainingLog(_TrainingLog, TrainerCallback):
        pass

    return TrainingLog(task, reporting)


def _trainer_args(cls, cfg, seed: int, max_length: int, out_dir: Path, device: DeviceChoice, **extra):
    import torch

    # Newer transformers 5 call it `activation_checkpointing`; older ones (5.17, on the GPU image) only know
    # `gradient_checkpointing`, now its deprecated alias.
    fields = {f.name for f in dataclasses.fields(cls)}
    checkpointing = (
        "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    )
    return cls(
        output_dir=str(out_dir / "_trainer"),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        max_length=max_length,
        seed=seed,
        data_seed=seed,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_nan_inf_filter=False,  # a NaN loss shows in the curve instead of the previous mean
        use_cpu=device.device == "cpu",
        bf16=device.dtype == torch.bfloat16,
        fp16=device.dtype == torch.float16,
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        # TRL turns it on by default: it trades compute for memory, a loss for small models on CPU.
        **{checkpointing: cfg.gradient_checkpointing},
        **extra,
    )


DPO_LOSSES = ("sigmoid", "robust")


def dpo_loss_args(cfg) -> dict:
    """TRL's `loss_type` and `label_smoothing` for a DpoConfig (ValueError for a loss it does not offer)."""
    if cfg.loss_type not in DPO_LOSSES:
        raise ValueError(f"loss_type must be one of {', '.join(DPO_LOSSES)}, not {cfg.loss_type!r}")
    smoothing = cfg.label_smoothing or 0.0
    if cfg.loss_type == "robust" and not 0.0 <= smoothing < 0.5:
        raise ValueError(f"the robust loss needs label_smoothing in [0, 0.5), got {smoothing}")
    return {"loss_type": [cfg.loss_type], "label_smoothing": smoothing if cfg.loss_type == "robust" else 0.0}


class TrainingDiverged(RuntimeError):
    """Training left non-finite weights: nothing is saved, since every later step would score NaN."""


def _freeze_model_libraries() -> None:
    """Before a training builds its model: the model libraries imported, frozen for the collector
    (`core.heap`), so that the Trainer's full collection at the start of training walks only what the step
    made (0.4-0.5 s less per training on CPU)."""
    import trl  # noqa: F401 - its modules (and transformers', torch's) are what to freeze

    freeze_imported()


def _raise_if_diverged(model, curve: list[dict]) -> None:
    import torch

    bad = [name for name, w in model.named_parameters() if not bool(torch.isfinite(w).all())]
    if not bad:
        return
    nan_steps = [row["step"] for row in curve if not math.isfinite(row.get("loss", 0.0))]
    first = (
        f"the loss was first non-finite at step {nan_steps[0]}"
        if nan_steps
        else "no logged loss was non-finite"
    )
    raise TrainingDiverged(
        f"training diverged: {len(bad)} of {len(list(model.parameters()))} weight tensors are non-finite "
        f"(first: {bad[0]}); {first}. Lower the learning rate, or train in float32 (half precision off)."
    )


def _train_and_save(
    trainer, tokenizer, log: _TrainingLog, out_dir: Path, parent: dict[str, Any] | None
) -> tuple[list[dict], float, int]:
    """Train, save the policy (full weights, or the adapter with `parent`) and tokenizer as safetensors,
    free the model; returns the curve, seconds and the number of trained parameters."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the curve goes to MLflow, not stdout
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    _raise_if_diverged(trainer.model, log.rows)
    accelerator = trainer.accelerator
    # Under `accelerate launch` every process trains; the weights are gathered (a no-op for DDP, needed
    # for FSDP) by all of them and written by the first.
    state = accelerator.get_state_dict(trainer.model) if accelerator.num_processes > 1 else None
    if trainer.is_world_process_zero():
        out_dir.mkdir(parents=True, exist_ok=True)
        model = accelerator.unwrap_model(trainer.model)
        save_policy(model, tokenizer, out_dir, parent, state_dict=state)
    del trainer
    release_cuda_memory()
    return log.rows, seconds, trainable


def sft_dataset(
    tokenizer, rows: Sequence[tuple[str, str]], max_length: int, min_response_tokens: int
) -> tuple[list[dict], int, int]:
    """Pre-tokenized SFT rows ({input_ids, completion_mask}) from (prompt, response) pairs, fitted to
    `max_length`; returns them with the counts of truncated and dropped rows."""
    out, truncated, dropped = [], 0, 0
    for prompt, response in rows:
        fitted = fit(tokenizer, prompt, [response], max_length, min_response_tokens)
        if fitted is None:
            dropped += 1
            continue
        truncated += fitted.truncated
        completion = fitted.completions[0]
        out.append(
            {
                "input_ids": fitted.prompt_ids + completion,
                "completion_mask": [0] * len(fitted.prompt_ids) + [1] * len(completion),
            }
        )
    return out, truncated, dropped


def train_sft(
    model,
    tokenizer,
    rows: Sequence[tuple[str, str]],
    cfg: ReferenceConfig,
    out_dir: Path,
    device: DeviceChoice,
    reporting: Reporting = Reporting(),
    parent: dict[str, Any] | None = None,
) -> TrainResult:
    """Supervised fine-tuning on (prompt, response) rows with TRL's SFTTrainer, loss on the response only
    (every weight, or a LoRA adapter when `cfg.lora_r` > 0, whose `parent` is the base's identity); saves
    to out_dir."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    os.environ.setdefault("WANDB_DISABLED", "true")
    lengths = [encoded_length(tokenizer, p, [r]) for p, r in rows]
    max_length, source = choose_max_length(cfg.max_length, lengths, context_window(model))
    data, truncated, dropped = sft_dataset(tokenizer, rows, max_length, cfg.min_response_tokens)
    if not data:
        raise ValueError(f"no SFT row keeps {cfg.min_response_tokens} response tokens within {max_length}")
    log = _training_log("sft", reporting)
    trainer = SFTTrainer(
        model=model,
        args=_trainer_args(SFTConfig, cfg, cfg.seed, max_length, out_dir, device, completion_only_loss=True),
        train_dataset=Dataset.from_list(data),
        processing_class=tokenizer,
        callbacks=[log],
        peft_config=cfg.lora.peft_config(),
    )
    history, seconds, trainable = _train_and_save(trainer, tokenizer, log, out_dir, parent)
    tokens = int(sum(len(r["input_ids"]) for r in data) * cfg.epochs)
    return TrainResult(
        history, max_length, source, len(data), truncated, dropped, tokens, seconds, {}, trainable
    )


def train_reference(
    corpus,
    rows,
    cfg: ReferenceConfig,
    out_dir: Path,
    device,
    reporting=Reporting(),
    models_dir: Path | None = None,
) -> TrainResult:
    """The reference policy: the base model of `cfg` (`build_base`: a tokenizer trained on `corpus` when
    it is built from a config; a packaged model converted once under `models_dir`), then SFT on (prompt,
    response) rows (`train_sft`); saves to out_dir. The base's identity is in `result.extra['base']`."""
    _freeze_model_libraries()
    model, tokenizer, base = build_base(cfg, corpus, models_dir)
    result = train_sft(model, tokenizer, rows, cfg, out_dir, device, reporting, parent=base)
    result.extra["base"] = base
    return result


def dpo_dataset(
    tokenizer, rows: Sequence[tuple[str, str, str]], max_length: int, min_response_tokens: int
) -> tuple[list[dict], int, int]:
    """Pre-tokenized DPO rows ({prompt_ids, chosen_ids, rejected_ids, length}) from (prompt, chosen,
    rejected), fitted to `max_length`; returns them with the counts of truncated and dropped pairs."""
    out, truncated, dropped = [], 0, 0
    for prompt, chosen, rejected in rows:
        fitted = fit(tokenizer, prompt, [chosen, rejected], max_length, min_response_tokens)
        if fitted is None:
            dropped += 1
            continue
        truncated += fitted.truncated
        c, r = fitted.completions
        out.append(
            {
                "prompt_ids": fitted.prompt_ids,
                "chosen_ids": c,
                "rejected_ids": r,
                "length": len(fitted.prompt_ids) + max(len(c), len(r)),
            }
        )
    return out, truncated, dropped


def _pretokenized_dpo_trainer():
    """TRL's DPOTrainer fed rows we tokenized and fitted ourselves: TRL 1.x would re-tokenize the text,
    cut from the right (`keep_start`) and silently drop prompts that fill `max_length`. The length-grouped
    sampler gets our lengths (TRL's rows have no `input_ids` to measure)."""
    from transformers.trainer_pt_utils import LengthGroupedSampler
    from trl import DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if self.args.train_sampling_strategy != "group_by_length":
                return super()._get_train_sampler(train_dataset)
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                dataset=dataset,
                lengths=list(dataset["length"]),
            )

    return PretokenizedDPOTrainer


def train_dpo(
    reference_dir: Path,
    rows: Sequence[tuple[str, str, str]],
    cfg: DpoConfig,
    seed: int,
    out_dir: Path,
    device: DeviceChoice,
    reporting: Reporting = Reporting(),
) -> TrainResult:
    """DPO with TRL's DPOTrainer on (prompt, chosen, rejected) rows, starting from (and with the reference
    model) `reference_dir`; saves the policy to out_dir. With `cfg.lora_r` > 0 it trains a new adapter over
    the reference (its adapters merged), and TRL takes reference log-probabilities from the same weights
    with the adapter off."""
    import torch
    from datasets import Dataset
    from trl import DPOConfig

    _freeze_model_libraries()
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(reference_dir)
    # float32 master weights; on CUDA the trainer's bf16/fp16 autocast gives the half-precision speed
    # (fp16 weights cannot be trained: the grad scaler refuses to unscale fp16 gradients).
    model = load_merged(Path(reference_dir), torch.float32)
    lengths = [encoded_length(tokenizer, p, [ch, rj]) for p, ch, rj in rows]
    max_length, source = choose_max_length(cfg.max_length, lengths, context_window(model))
    data, truncated, dropped = dpo_dataset(tokenizer, rows, max_length, cfg.min_response_tokens)
    if not data:
        raise ValueError(f"no DPO pair keeps {cfg.min_response_tokens} response tokens within {max_length}")
    log = _training_log("dpo", reporting)
    trainer = _pretokenized_dpo_trainer()(
        model=model,
        args=_trainer_args(
            DPOConfig,
            cfg,
            seed,
            max_length,
            out_dir,
            device,
            beta=cfg.beta,
            remove_unused_columns=False,
            **dpo_loss_args(cfg),
        ),
        train_dataset=Dataset.from_list(data),
        processing_class=tokenizer,
        callbacks=[log],
        peft_config=cfg.lora.peft_config(),
    )
    del model  # the trainer holds it
    parent = checkpoint_parent(Path(reference_dir))
    history, seconds, trainable = _train_and_save(trainer, tokenizer, log, out_dir, parent)
    tokens = int(sum(len(r["prompt_ids"]) * 2 + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in data))
    tokens = int(tokens * cfg.epochs)
    return TrainResult(
        history, max_length, source, len(data), truncated, dropped, tokens, seconds, {}, trainable
    )
