"""Per-pair scores under the reference policy, for the `margin` and `ches` selection strategies.

- `ref_margin` (arXiv 2406.17312, "Not All Preference Pairs Are Created Equal"): the implicit-reward margin
  log pi_ref(chosen|x) - log pi_ref(rejected|x) under the reference model; `margin` keeps the pairs with the
  smallest absolute margin (the ones the model is least sure about).
- `ches` (arXiv 2410.08847, "Unintentional Unalignment"): with h+ and h- the sums of the reference model's
  last-layer hidden states over the chosen and rejected response tokens, CHES = <h+, h-> - ||h+||^2; a high
  CHES means the two responses look alike to the model (likelihood displacement); `ches` keeps the lowest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from real_assets.core.device import DeviceChoice, release_cuda_memory
from real_assets.core.models import load_policy
from real_assets.core.progress import Progress, Report
from real_assets.core.scoring import score_pairs


def ches_score(h_chosen: np.ndarray, h_rejected: np.ndarray) -> np.ndarray:
    """CHES = <h+, h-> - ||h+||^2, row-wise over (pairs, hidden) arrays."""
    return np.einsum("ij,ij->i", h_chosen, h_rejected) - np.einsum("ij,ij->i", h_chosen, h_chosen)


def reference_pair_scores(
    reference_dir: Path,
    pairs: pd.DataFrame,
    device: DeviceChoice,
    max_length: int,
    min_response_tokens: int = 4,
    batch_size: int = 32,
    report: Report | None = None,
) -> pd.DataFrame:
    """`ref_margin` and `ches` of each pair (`prompt`, `chosen`, `rejected` columns of `pairs`) under the
    reference policy, in row order (NaN for a pair that cannot keep its responses)."""
    model, tokenizer = load_policy(reference_dir, device)
    prompts = list(pairs["prompt"])
    progress = Progress("reference scores", 2 * len(prompts), report, unit="sequences")
    try:
        scores = score_pairs(
            model,
            tokenizer,
            prompts,
            list(pairs["chosen"]),
            list(pairs["rejected"]),
            device,
            max_length,
            min_response_tokens,
            batch_size=batch_size,
            with_hidden=True,
            progress=progress,
        )
    finally:
        del model
        release_cuda_memory()
    margin = scores.logps[:, 0] - scores.logps[:, 1]
    ches = (
        ches_score(scores.hidden[:, 0], scores.hidden[:, 1])
        if scores.hidden is not None
        else np.full(len(prompts), np.nan)
    )
    return pd.DataFrame({"ref_margin": margin, "ches": ches})
