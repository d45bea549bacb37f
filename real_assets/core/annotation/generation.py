"""Candidate responses sampled from a policy: K per prompt, seeded, batched, on the device given.

Sample `j` of every prompt is drawn with its own seed (`sample_seed(seed, j)`), so a later run that adds
prompts or raises K draws only the samples missing and leaves the earlier ones as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from real_assets.core.hashing import digest


@dataclass(frozen=True)
class SamplingConfig:
    """How candidates are sampled: `k` samples per prompt, nucleus sampling at `temperature` and `top_p`,
    at most `max_new_tokens` each, seeded by `seed`; `batch_size` prompts per forward pass."""

    k: int = 4
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 48
    seed: int = 0
    batch_size: int = 16

    def check(self) -> None:
        """ValueError naming the setting that is out of range."""
        if self.k < 2:
            raise ValueError(f"k must be >= 2 (a pair needs two candidates), got {self.k}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")

    def provenance(self) -> dict:
        """The settings that decide a sample (the batch size does not)."""
        return {k: v for k, v in asdict(self).items() if k != "batch_size"}


@dataclass(frozen=True)
class PromptTodo:
    """A prompt and the sample indices it still lacks."""

    prompt_id: str
    prompt: str
    missing: tuple[int, ...]


def missing_samples(
    prompts: Sequence[tuple[str, str]], have: dict[str, set[int]], k: int
) -> list[PromptTodo]:
    """The prompts with fewer than `k` samples, and which sample indices each lacks."""
    out = []
    for pid, prompt in prompts:
        missing = tuple(j for j in range(k) if j not in have.get(pid, set()))
        if missing:
            out.append(PromptTodo(pid, prompt, missing))
    return out


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of every prompt."""
    return int(digest("sample", str(seed), str(index))[:8], 16)


def sample_candidates(
    policy_dir: Path, todo: Sequence[PromptTodo], cfg: SamplingConfig, device
) -> list[tuple[str, int, str]]:
    """(prompt_id, sample index, text) of every missing sample, drawn from the policy saved at
    `policy_dir` (a model step: run it through `Compute.run`, which passes `device`)."""
    from real_assets.core.models import load_policy
    from real_assets.core.scoring import generate

    cfg.check()
    model, tokenizer = load_policy(Path(policy_dir), device)
    out: list[tuple[str, int, str]] = []
    for index in sorted({j for t in todo for j in t.missing}):
        batch = [t for t in todo if index in t.missing]
        texts = generate(
            model,
            tokenizer,
            [t.prompt for t in batch],
            device,
            seed=sample_seed(cfg.seed, index),
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            batch_size=cfg.batch_size,
            top_p=cfg.top_p,
        )
        out += [(t.prompt_id, index, text) for t, text in zip(batch, texts, strict=True)]
    del model
    return out
