"""The policy side: a tokenizer and small causal LM built offline, SFT and DPO with TRL, scoring.

Text format (plain, no chat template): the prompt is `Question: {prompt}\nAnswer:` and a completion is
` {response}` followed by EOS. Prompt and completion are tokenized separately, and long inputs keep the
completion and lose the start of the prompt (`fit_to_length`), the same way in SFT, DPO and scoring: TRL only
ever sees rows that already fit. Every function takes and returns plain paths, rows and numbers.

torch, transformers, datasets and TRL are imported inside the functions that use them: the code location
imports this module for its configs, and every Dagster process (code server, run worker) would otherwise
pay seconds of imports before its first step.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from real_assets.core.device import DeviceChoice, release_cuda_memory
from real_assets.core.progress import Progress, Report

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"
BUILTIN_BASE = "builtin:tiny-gpt2"
LENGTH_COVERAGE = 0.95
"""A derived `max_length` covers this share of the rows without cutting."""


def format_prompt(prompt: str) -> str:
    """The prompt as the policy sees it."""
    return f"Question: {prompt}\nAnswer:"


def format_completion(response: str) -> str:
    """A response as a completion of `format_prompt` (EOS is appended by `encode`)."""
    return f" {response}"


@dataclass(frozen=True)
class TrainerSettings:
    """What SFT and DPO share. `max_length` None: derived from the data (covers 95% of rows, capped by the
    model's context window). Rows whose responses cannot keep `min_response_tokens` are dropped and counted.
    """

    learning_rate: float = 5e-5
    epochs: float = 2.0
    batch_size: int = 16
    max_length: int | None = None
    min_response_tokens: int = 4
    group_by_length: bool = True
    gradient_checkpointing: bool = False
    logging_steps: int = 2


@dataclass(frozen=True)
class ReferenceConfig(TrainerSettings):
    """The reference policy step: the base causal LM and its SFT. `base_model`: `builtin:tiny-gpt2` (built
    from a config, tokenizer trained on the corpus) or any AutoModelForCausalLM id or local path."""

    learning_rate: float = 2e-3
    epochs: float = 12.0
    base_model: str = BUILTIN_BASE
    trust_remote_code: bool = False
    vocab_size: int = 1024
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    n_positions: int = 256
    seed: int = 0


@dataclass(frozen=True)
class DpoConfig(TrainerSettings):
    """The DPO step (TRL DPOTrainer) from the reference policy; the seed is the partition's `seed`. One
    epoch at a higher learning rate keeps the default demo (7 strategies x 2 seeds, `all` = every pair)
    within its time budget on a CPU."""

    learning_rate: float = 1e-4
    epochs: float = 1.0
    beta: float = 0.2


@dataclass
class TrainResult:
    """What a training run reports besides its checkpoint."""

    history: list[dict[str, float]]
    max_length: int
    max_length_source: str
    rows: int
    pairs_truncated: int
    pairs_dropped_too_long: int
    tokens: int
    """Non-padding tokens seen over all epochs."""
    train_seconds: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds > 0 else float("nan")

    def summary(self) -> dict[str, float | int | str]:
        """The figures for metadata and MLflow."""
        return {
            "max_length": self.max_length,
            "max_length_source": self.max_length_source,
            "train_rows": self.rows,
            "pairs_truncated": self.pairs_truncated,
            "pairs_dropped_too_long": self.pairs_dropped_too_long,
            "train_tokens": self.tokens,
            "train_seconds": round(self.train_seconds, 3),
            "tokens_per_s": round(self.tokens_per_s, 1),
        }


# ---------------------------------------------------------------------------------------------- lengths


def context_window(model) -> int | None:
    """The model's context window: `n_positions` (GPT-2) or `max_position_embeddings`."""
    config = model.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def encode(tokenizer, prompt: str, responses: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """Token ids of the formatted prompt and of each formatted response with EOS, tokenized separately."""
    prompt_ids = tokenizer(format_prompt(prompt), add_special_tokens=False)["input_ids"]
    completions = [
        tokenizer(format_completion(r), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for r in responses
    ]
    return prompt_ids, completions


@dataclass(frozen=True)
class Fitted:
    prompt_ids: list[int]
    completions: list[list[int]]
    truncated: bool


def fit_to_length(
    prompt_ids: Sequence[int], completions: Sequence[Sequence[int]], max_length: int, min_response_tokens: int
) -> Fitted | None:
    """Make `prompt + completion` fit `max_length` for every completion of one prompt: the prompt loses its
    start (the latest turns stay). Only when a completion alone leaves the prompt less than a quarter of the
    window is the completion cut at its end; if that leaves fewer than `min_response_tokens`, None (drop)."""
    longest = max(len(c) for c in completions)
    if len(prompt_ids) + longest <= max_length:
        return Fitted(list(prompt_ids), [list(c) for c in completions], False)
    prompt_room = max(max_length - longest, min(len(prompt_ids), max_length // 4))
    completion_room = max_length - prompt_room
    if completion_room < min_response_tokens:
        return None
    kept_prompt = list(prompt_ids[len(prompt_ids) - prompt_room :]) if prompt_room > 0 else []
    return Fitted(kept_prompt, [list(c[:completion_room]) for c in completions], True)


def derive_max_length(lengths: Sequence[int], window: int | None, coverage: float = LENGTH_COVERAGE) -> int:
    """The smallest multiple of 8 covering `coverage` of the lengths, capped by the context window."""
    if not lengths:
        raise ValueError("no rows to derive max_length from")
    covering = int(math.ceil(float(np.quantile(np.asarray(lengths), coverage)) / 8) * 8)
    return min(covering, window) if window else covering


def choose_max_length(configured: int | None, lengths: Sequence[int], window: int | None) -> tuple[int, str]:
    """(max_length, where it came from): the configured value (capped by the window) or one derived."""
    if configured:
        if window and configured > window:
            return window, f"configured {configured}, capped by context window {window}"
        return configured, "configured"
    return derive_max_length(lengths, window), f"derived: covers {LENGTH_COVERAGE:.0%} of rows"


# ---------------------------------------------------------------------------------------------- models


def build_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the corpus (seconds on CPU), with EOS and PAD tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, bos_token=EOS)


def build_base(config: ReferenceConfig, corpus: Sequence[str]):
    """The untrained (or pretrained, for a model id/path) policy and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(config.seed)
    if config.base_model != BUILTIN_BASE:
        tokenizer = AutoTokenizer.from_pretrained(
            config.base_model, trust_remote_code=config.trust_remote_code
        )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(
            config.base_model, dtype=torch.float32, trust_remote_code=config.trust_remote_code
        )
        return model, tokenizer
    tokenizer = build_tokenizer(corpus, config.vocab_size)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=config.n_positions,
            n_embd=config.n_embd,
            n_layer=config.n_layer,
            n_head=config.n_head,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    return model, tokenizer


def load_policy(path: Path, device: DeviceChoice):
    """A saved policy and its tokenizer, in eval mode on the device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=device.dtype).to(device.device).eval()
    return model, tokenizer


# ---------------------------------------------------------------------------------------------- training


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


class TrainingDiverged(RuntimeError):
    """Training left non-finite weights: nothing is saved, since every later step would score NaN."""


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


def _train_and_save(trainer, tokenizer, log: _TrainingLog, out_dir: Path) -> tuple[list[dict], float]:
    """Train, save model and tokenizer as safetensors, free the model; returns the curve and seconds."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the curve goes to MLflow, not stdout
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
        model.save_pretrained(out_dir, safe_serialization=True, state_dict=state)
        tokenizer.save_pretrained(out_dir)
    del trainer
    release_cuda_memory()
    return log.rows, seconds


def sft_dataset(
    tokenizer, rows: Sequence[tuple[str, str]], max_length: int, min_response_tokens: int
) -> tuple[list[dict], int, int]:
    """Pre-tokenized SFT rows ({input_ids, completion_mask}) from (prompt, response) pairs, fitted to
    `max_length`; returns them with the counts of truncated and dropped rows."""
    out, truncated, dropped = [], 0, 0
    for prompt, response in rows:
        fitted = fit_to_length(*encode(tokenizer, prompt, [response]), max_length, min_response_tokens)
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
) -> TrainResult:
    """Supervised fine-tuning on (prompt, response) rows with TRL's SFTTrainer, loss on the response only;
    saves to out_dir."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    os.environ.setdefault("WANDB_DISABLED", "true")
    lengths = [sum(map(len, (p, *c))) for p, c in (encode(tokenizer, p, [r]) for p, r in rows)]
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
    )
    history, seconds = _train_and_save(trainer, tokenizer, log, out_dir)
    tokens = int(sum(len(r["input_ids"]) for r in data) * cfg.epochs)
    return TrainResult(history, max_length, source, len(data), truncated, dropped, tokens, seconds)


def train_reference(
    corpus, rows, cfg: ReferenceConfig, out_dir: Path, device, reporting=Reporting()
) -> TrainResult:
    """The reference policy: the base model of `cfg` (`build_base`, a tokenizer trained on `corpus` when
    it is built from a config), then SFT on (prompt, response) rows (`train_sft`); saves to out_dir."""
    model, tokenizer = build_base(cfg, corpus)
    return train_sft(model, tokenizer, rows, cfg, out_dir, device, reporting)


def dpo_dataset(
    tokenizer, rows: Sequence[tuple[str, str, str]], max_length: int, min_response_tokens: int
) -> tuple[list[dict], int, int]:
    """Pre-tokenized DPO rows ({prompt_ids, chosen_ids, rejected_ids, length}) from (prompt, chosen,
    rejected), fitted to `max_length`; returns them with the counts of truncated and dropped pairs."""
    out, truncated, dropped = [], 0, 0
    for prompt, chosen, rejected in rows:
        fitted = fit_to_length(
            *encode(tokenizer, prompt, [chosen, rejected]), max_length, min_response_tokens
        )
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
    model) `reference_dir`; saves the policy to out_dir."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(reference_dir)
    # float32 master weights; on CUDA the trainer's bf16/fp16 autocast gives the half-precision speed
    # (fp16 weights cannot be trained: the grad scaler refuses to unscale fp16 gradients).
    model = AutoModelForCausalLM.from_pretrained(reference_dir, dtype=torch.float32)
    lengths = [
        len(p) + max(len(x) for x in c) for p, c in (encode(tokenizer, p, [ch, rj]) for p, ch, rj in rows)
    ]
    max_length, source = choose_max_length(cfg.max_length, lengths, context_window(model))
    data, truncated, dropped = dpo_dataset(tokenizer, rows, max_length, cfg.min_response_tokens)
    if not data:
        raise ValueError(f"no DPO pair keeps {cfg.min_response_tokens} response tokens within {max_length}")
    log = _training_log("dpo", reporting)
    trainer = _pretokenized_dpo_trainer()(
        model=model,
        args=_trainer_args(
            DPOConfig, cfg, seed, max_length, out_dir, device, beta=cfg.beta, remove_unused_columns=False
        ),
        train_dataset=Dataset.from_list(data),
        processing_class=tokenizer,
        callbacks=[log],
    )
    del model  # the trainer holds it
    history, seconds = _train_and_save(trainer, tokenizer, log, out_dir)
    tokens = int(sum(len(r["prompt_ids"]) * 2 + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in data))
    tokens = int(tokens * cfg.epochs)
    return TrainResult(history, max_length, source, len(data), truncated, dropped, tokens, seconds)


def training_record(cfg, **extra) -> dict:
    """The hyperparameters a checkpoint was trained with, as stored beside it (one truth for eval)."""
    return {**asdict(cfg), **extra}


# ---------------------------------------------------------------------------------------------- scoring


@dataclass
class PairScores:
    """Per pair: summed log-probabilities of both responses, optionally the summed last-layer hidden
    states over each response's tokens; `kept` marks pairs scored (others could not keep their response)."""

    logps: np.ndarray
    """(pairs, 2)"""
    hidden: np.ndarray | None
    """(pairs, 2, hidden) or None"""
    kept: np.ndarray
    truncated: int
    dropped: int


def score_pairs(
    model,
    tokenizer,
    prompts: Sequence[str],
    firsts: Sequence[str],
    seconds: Sequence[str],
    device: DeviceChoice,
    max_length: int,
    min_response_tokens: int = 4,
    batch_size: int = 32,
    with_hidden: bool = False,
    progress: Progress | None = None,
) -> PairScores:
    """Score both responses of each pair given its prompt, fitted as in training (`fit_to_length`)."""
    import torch

    n = len(prompts)
    logps = np.full((n, 2), np.nan)
    hidden = None
    kept = np.zeros(n, dtype=bool)
    sequences: list[tuple[int, int, list[int], list[int]]] = []
    truncated = dropped = 0
    for i, (prompt, a, b) in enumerate(zip(prompts, firsts, seconds, strict=True)):
        fitted = fit_to_length(*encode(tokenizer, prompt, [a, b]), max_length, min_response_tokens)
        if fitted is None:
            dropped += 1
            continue
        kept[i] = True
        truncated += fitted.truncated
        sequences += [(i, j, fitted.prompt_ids, c) for j, c in enumerate(fitted.completions)]
    order = sorted(range(len(sequences)), key=lambda k: len(sequences[k][2]) + len(sequences[k][3]))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = [sequences[k] for k in order[start : start + batch_size]]
            width = max(len(p) + len(c) for _, _, p, c in batch)
            input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            attention = torch.zeros_like(input_ids)
            completion = torch.zeros_like(input_ids)
            for row, (_, _, p, c) in enumerate(batch):
                input_ids[row, : len(p) + len(c)] = torch.tensor(p + c)
                attention[row, : len(p) + len(c)] = 1
                completion[row, len(p) : len(p) + len(c)] = 1
            input_ids, attention, completion = (
                t.to(device.device) for t in (input_ids, attention, completion)
            )
            out = model(input_ids=input_ids, attention_mask=attention, output_hidden_states=with_hidden)
            token_logps = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
            token_logps = token_logps.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
            sums = (token_logps * completion[:, 1:]).sum(-1).cpu().numpy()
            if with_hidden:
                last = out.hidden_states[-1].float()
                summed = (last * completion[:, :, None]).sum(1).cpu().numpy()
                if hidden is None:
                    hidden = np.full((n, 2, summed.shape[1]), np.nan)
            for row, (i, j, _, _) in enumerate(batch):
                logps[i, j] = sums[row]
                if with_hidden:
                    hidden[i, j] = summed[row]
            if progress is not None:
                progress.update(len(batch))
    return PairScores(logps, hidden, kept, truncated, dropped)


def sequence_logps(
    model,
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    device: DeviceChoice,
    batch_size: int = 32,
    max_length: int | None = None,
) -> list[float]:
    """Sum of log-probabilities of each formatted response (with EOS) given its formatted prompt (prompt
    cut from the left to fit `max_length`, default the context window)."""
    window = max_length or context_window(model) or 1024
    scores = score_pairs(
        model, tokenizer, prompts, responses, responses, device, window, 1, batch_size=batch_size
    )
    return scores.logps[:, 0].tolist()


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    device: DeviceChoice,
    seed: int,
    max_new_tokens: int = 48,
    temperature: float = 0.7,
    batch_size: int = 32,
) -> list[str]:
    """Sampled completions, one per prompt, seeded; long prompts lose their start to fit the window."""
    import torch

    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    window = context_window(model) or 1024
    out: list[str] = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            batch = [format_prompt(p) for p in prompts[start : start + batch_size]]
            enc = tokenizer(
                batch,
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max(window - max_new_tokens, 1),
                add_special_tokens=False,
            ).to(device.device)
            gen = model.generate(
                **enc,
                do_sample=True,
                temperature=temperature,
                top_k=0,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            out.extend(
                t.strip()
                for t in tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            )
    return out


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (ties counted as half successes)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))
