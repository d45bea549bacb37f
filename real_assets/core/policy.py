"""The policy side: a tokenizer and small causal LM built offline, SFT and DPO with TRL, scoring.

Text format (plain, no chat template): the prompt is `Question: {prompt}\nAnswer:` and a completion is
` {response}` followed by EOS. Every function takes and returns plain paths and numbers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    TrainerCallback,
)
from transformers.trainer_callback import PrinterCallback

from real_assets.core.device import DeviceChoice, release_cuda_memory

EOS = "<|endoftext|>"
PAD = "<|pad|>"
BUILTIN_BASE = "builtin:tiny-gpt2"


def format_prompt(prompt: str) -> str:
    """The prompt as the policy sees it."""
    return f"Question: {prompt}\nAnswer:"


def format_completion(response: str) -> str:
    """A response as a completion of `format_prompt` (EOS is added by the tokenizer/trainer)."""
    return f" {response}"


@dataclass(frozen=True)
class BaseModelConfig:
    """What the reference policy starts from: the built-in tiny model or any causal LM id/path."""

    model: str = BUILTIN_BASE
    vocab_size: int = 1024
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    n_positions: int = 256
    trust_remote_code: bool = False
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Trainer settings shared by SFT and DPO (DPO adds beta)."""

    learning_rate: float = 5e-4
    epochs: float = 2.0
    batch_size: int = 16
    max_length: int = 192
    beta: float = 0.1
    seed: int = 0
    logging_steps: int = 2


def build_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the corpus (seconds on CPU), with EOS and PAD tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

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


def build_base(config: BaseModelConfig, corpus: Sequence[str]):
    """The untrained (or pretrained, for a model id/path) policy and its tokenizer."""
    torch.manual_seed(config.seed)
    if config.model != BUILTIN_BASE:
        tokenizer = AutoTokenizer.from_pretrained(config.model, trust_remote_code=config.trust_remote_code)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(
            config.model, dtype=torch.float32, trust_remote_code=config.trust_remote_code
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


class _History(TrainerCallback):
    """Collects the trainer's logged metrics, step by step, and forwards them to `on_log`."""

    def __init__(self, on_log: Callable[[int, dict[str, float]], None] | None):
        self.rows: list[dict[str, float]] = []
        self.forward = on_log

    def on_log(self, args, state, control, logs=None, **kwargs):
        numeric = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
        self.rows.append({"step": state.global_step, **numeric})
        if self.forward is not None and numeric:
            self.forward(state.global_step, numeric)


def _trainer_args(cls, cfg: TrainConfig, out_dir: Path, device: DeviceChoice, **extra):
    return cls(
        output_dir=str(out_dir / "_trainer"),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=device.device == "cpu",
        bf16=device.dtype == torch.bfloat16,
        fp16=device.dtype == torch.float16,
        dataloader_num_workers=0,
        **extra,
    )


def _train_and_save(trainer, tokenizer, history: _History, out_dir: Path) -> list[dict[str, float]]:
    """Train, save model and tokenizer as safetensors, free the model; returns the logged curve."""
    trainer.remove_callback(PrinterCallback)  # the curve goes to MLflow, not stdout
    trainer.train()
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    del trainer
    release_cuda_memory()
    return history.rows


def train_sft(
    model,
    tokenizer,
    rows: Sequence[dict[str, str]],
    cfg: TrainConfig,
    out_dir: Path,
    device: DeviceChoice,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Supervised fine-tuning on {"prompt", "completion"} rows with TRL's SFTTrainer; saves to out_dir."""
    from trl import SFTConfig, SFTTrainer

    os.environ.setdefault("WANDB_DISABLED", "true")
    history = _History(on_log)
    trainer = SFTTrainer(
        model=model,
        args=_trainer_args(SFTConfig, cfg, out_dir, device, completion_only_loss=True),
        train_dataset=Dataset.from_list(list(rows)),
        processing_class=tokenizer,
        callbacks=[history],
    )
    return _train_and_save(trainer, tokenizer, history, out_dir)


def train_dpo(
    reference_dir: Path,
    rows: Sequence[dict[str, str]],
    cfg: TrainConfig,
    out_dir: Path,
    device: DeviceChoice,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """DPO with TRL's DPOTrainer on {"prompt", "chosen", "rejected"} rows, starting from (and with the
    reference model) `reference_dir`; saves the policy to out_dir and returns the logged curve."""
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(reference_dir)
    # float32 master weights; on CUDA the trainer's bf16/fp16 autocast gives the half-precision speed
    # (fp16 weights cannot be trained: the grad scaler refuses to unscale fp16 gradients).
    model = AutoModelForCausalLM.from_pretrained(reference_dir, dtype=torch.float32)
    history = _History(on_log)
    trainer = DPOTrainer(
        model=model,
        args=_trainer_args(DPOConfig, cfg, out_dir, device, beta=cfg.beta),
        train_dataset=Dataset.from_list(list(rows)),
        processing_class=tokenizer,
        callbacks=[history],
    )
    del model  # the trainer holds it
    return _train_and_save(trainer, tokenizer, history, out_dir)


def load_policy(path: Path, device: DeviceChoice):
    """A saved policy and its tokenizer, in eval mode on the device."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=device.dtype).to(device.device).eval()
    return model, tokenizer


@torch.no_grad()
def sequence_logps(
    model,
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    device: DeviceChoice,
    batch_size: int = 32,
    max_length: int = 192,
) -> list[float]:
    """Sum of log-probabilities of each formatted response (with EOS) given its formatted prompt."""
    out: list[float] = []
    for start in range(0, len(prompts), batch_size):
        ids, masks = [], []
        for prompt, response in zip(
            prompts[start : start + batch_size], responses[start : start + batch_size]
        ):
            p = tokenizer(format_prompt(prompt), add_special_tokens=False)["input_ids"]
            c = tokenizer(format_completion(response), add_special_tokens=False)["input_ids"] + [
                tokenizer.eos_token_id
            ]
            seq = (p + c)[:max_length]
            ids.append(seq)
            masks.append(([0] * len(p) + [1] * len(c))[:max_length])
        width = max(len(s) for s in ids)
        input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        loss_mask = torch.zeros_like(input_ids)
        for i, (seq, mask) in enumerate(zip(ids, masks)):
            input_ids[i, : len(seq)] = torch.tensor(seq)
            attention[i, : len(seq)] = 1
            loss_mask[i, : len(seq)] = torch.tensor(mask)
        input_ids, attention, loss_mask = (t.to(device.device) for t in (input_ids, attention, loss_mask))
        logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
        logps = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        out.extend((logps * loss_mask[:, 1:]).sum(-1).tolist())
    return out


@torch.no_grad()
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
    """Sampled completions, one per prompt, seeded; returns the decoded response text only."""
    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = [format_prompt(p) for p in prompts[start : start + batch_size]]
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device.device)
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
