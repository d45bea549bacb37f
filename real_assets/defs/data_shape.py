"""Why a split has nothing to train or evaluate on: one message per cause, each with what to change.

Degenerate data (every prompt held out, one response per prompt, every pair tied, too few held-out pairs)
must stop the step that needs the data with its own cause, never surface later as a different error or as
NaN presented as a result."""

from __future__ import annotations

import dagster as dg

from real_assets.resources import Warehouse

SPLIT_NAMES = {"train": "train", "test": "held-out (test)"}


def no_pairs_reason(warehouse: Warehouse, split: str) -> str:
    """Why `split` has no candidate pair: no prompts in it, a single response per prompt, or every pair
    tied; with what to change."""
    with warehouse.connect(read_only=True) as con:
        total, in_split, pairable = con.execute(
            "select count(*), count(*) filter (where split = ?), "
            "count(*) filter (where split = ? and pairable) from raw.prompts",
            [split, split],
        ).fetchone()
    name = SPLIT_NAMES.get(split, split)
    if in_split == 0:
        return no_prompts_reason(split, total)
    if pairable == 0:
        return (
            f"every one of the {in_split} {name} prompts has a single response, and a pair needs two "
            "responses to one prompt: use a source with several responses per prompt, or a table with "
            "chosen and rejected columns (raw_responses column_map)"
        )
    return (
        f"the {pairable} {name} prompts with two or more responses have no pair with different label "
        "scores (every pair is tied, so none has a chosen and a rejected side): check the score column "
        "(raw_responses column_map score), or use labels that tell responses apart"
    )


def no_prompts_reason(split: str, total: int) -> str:
    """The message for a split without prompts, `total` being every prompt ingested."""
    if split == "train":
        return (
            f"the train split is empty: all {total} prompts are in the held-out split (each prompt's split "
            "comes from a hash of its id and raw_responses test_fraction): ingest more prompts, or lower "
            "test_fraction"
        )
    return (
        f"the held-out (test) split is empty: none of the {total} prompts is held out: ingest more prompts, "
        "or raise raw_responses test_fraction"
    )


def require_prompts(warehouse: Warehouse, split: str) -> None:
    """`dg.Failure` naming the cause and the fix when `split` has no prompts."""
    with warehouse.connect(read_only=True) as con:
        total, in_split = con.execute(
            "select count(*), count(*) filter (where split = ?) from raw.prompts", [split]
        ).fetchone()
    if in_split == 0:
        raise dg.Failure(no_prompts_reason(split, total), allow_retries=False)


def too_few_held_out_pairs(pairs: int, minimum: int, cause: str) -> dg.Failure:
    """The failure of an eval with fewer held-out pairs than `minimum` (`cause`: why, and what to change)."""
    return dg.Failure(
        f"only {pairs} held-out pair(s) to evaluate on, fewer than eval_scores min_eval_pairs = {minimum} "
        f"(the accuracy of so few tells nothing apart): {cause}; or set min_eval_pairs lower to accept them",
        allow_retries=False,
    )
