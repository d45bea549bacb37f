"""Named demo set-ups (`real-assets demo --preset NAME`): the source, the strategies and seeds, and every
step's config for one study, so that a published comparison can be rerun with one command. Flags and
`--config` given on the command line override a preset's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SMOLLM2 = "packaged:smollm2-135m-instruct"
STUDY_STRATEGIES = ("easy", "hard", "random", "all", "margin", "ches", "aepo")


@dataclass(frozen=True)
class Preset:
    description: str
    flags: dict[str, Any]
    """Demo flags by argparse destination (`n_prompts`, `seeds`, `strategies`, `skip`, `source`, ...)."""
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Step configs by asset name, as `--config ASSET=JSON` would give them."""


def _lora_study(max_length: int, lora_r: int, batch_size: int) -> dict[str, dict[str, Any]]:
    lora = {"lora_r": lora_r, "lora_alpha": 2 * lora_r, "max_length": max_length, "batch_size": batch_size}
    return {
        "reference_policy": {"base_model": SMOLLM2, "epochs": 1.0, "learning_rate": 2e-4, **lora},
        "dpo_checkpoint": {"epochs": 1.0, "learning_rate": 5e-4, "beta": 0.1, **lora},
        "eval_scores": {
            "samples_per_prompt": 1,
            "max_new_tokens": 32,
            "batch_size": 16,
            "max_eval_pairs": 24,
        },
    }


PRESETS = {
    "smollm2-cpu": Preset(
        "SmolLM2-135M-Instruct + LoRA (r 8) on a CPU-sized synthetic subset: 24 prompts with 4 responses "
        "each, 3 seeds, strategies easy, hard, random, all, margin, ches, aepo; max_length 128, at most 24 "
        "held-out pairs",
        {
            "source": "synthetic",
            "n_prompts": 24,
            "seeds": 3,
            "strategies": STUDY_STRATEGIES,
            "skip": ("budget_point", "budget_sweep"),
        },
        {"raw_responses": {"max_responses_per_prompt": 4}, **_lora_study(128, 8, 8)},
    ),
    "smollm2-gpu": Preset(
        "SmolLM2-135M-Instruct + LoRA (r 16) for one GPU: the source given with --source/--path (the HH "
        "harmless test file), 3 seeds, strategies easy, hard, random, all, margin, ches, aepo; "
        "max_length 512",
        {"seeds": 3, "strategies": STUDY_STRATEGIES, "skip": ("budget_point", "budget_sweep")},
        _lora_study(512, 16, 32),
    ),
}


def preset_names() -> list[str]:
    return sorted(PRESETS)
