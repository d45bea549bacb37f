"""A fake model backend for the tests about orchestration (`Compute(model_backend="fake")`).

Each fake stands in for one function that an asset passes to `Compute.run`, under the same name: it takes
the same arguments, writes a small but real checkpoint where the real one would (a tiny safetensors file, a
config and the training log), and returns a result of the same type. Its numbers are drawn from a digest of
its inputs, checkpoints by content: the same inputs always give the same checkpoint and figures, and other
strategies or seeds give others. The embeddings step runs `hashed_words_encoder` instead of its model
(`Compute.embed_chunks`). No torch, transformers, sentence-transformers or TRL is imported.

A test can stop a fake inside its step: with `$REAL_ASSETS_FAKE_BARRIER` naming a folder that holds
`<name>.hold`, the fake called `<name>` creates `<name>.reached` there and waits for `<name>.release`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from real_assets.core.progress import Progress

BARRIER_ENV = "REAL_ASSETS_FAKE_BARRIER"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LOG_FILE = "trainer_state.json"
MODEL_TYPE = "real-assets-fake"
WEIGHTS = 16
"""float32 values in a fake checkpoint's one tensor."""
MAX_LENGTH_CAP = 256
"""A derived fake max_length never exceeds the builtin model's context window."""
FAKE_EMBEDDER = "fake:hashed-words"
"""The embedder the fake backend uses whatever model is configured (`hashed_words_encoder`); it is the
`model_id` its rows carry, so a later run with a real model re-embeds them."""
FAKE_EMBEDDING_DIM = 384
_WORD = re.compile(r"\w+")


class UnknownModelFunction(LookupError):
    """`Compute.run` was asked to fake a function that has no fake."""


def fake_for(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The fake of a model function, found by its name; fails for a function that has none (a new model
    step needs its fake here, never a silent real run)."""
    name = getattr(fn, "__name__", repr(fn))
    try:
        return FAKES[name]
    except KeyError:
        raise UnknownModelFunction(
            f"the fake model backend has no fake for {name!r} (fakes: {', '.join(sorted(FAKES))}): add one "
            "to real_assets/core/fake_models.py, or run with model_backend='torch'"
        ) from None


# ---------------------------------------------------------------------------------------------- inputs


def _digest(*parts: Any) -> str:
    """sha256 of the parts' text forms (dataclass configs, rows and seeds have stable reprs)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def _rng(digest: str) -> np.random.Generator:
    return np.random.default_rng(int(digest[:16], 16))


def _checkpoint_digest(path: Path) -> str:
    """What identifies a checkpoint: its weights' sha256 (so a copied home gives the same figures). The
    folder must hold weights, as a real model must load."""
    weights = Path(path) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint {path} has no {WEIGHTS_FILE}: it cannot be loaded")
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def _max_length(configured: int | None, texts: Sequence[Sequence[str]]) -> tuple[int, str]:
    """The configured max_length, else one derived from word counts (a stand-in for token counts)."""
    if configured:
        return int(configured), "config"
    longest = max((sum(len(t.split()) + 1 for t in row) for row in texts), default=8)
    return min(MAX_LENGTH_CAP, max(8, longest)), "fake"


def wait_at_barrier(name: str) -> None:
    """Hold this fake step while `$REAL_ASSETS_FAKE_BARRIER/<name>.hold` exists: say so with
    `<name>.reached`, then wait for `<name>.release`."""
    folder = os.environ.get(BARRIER_ENV)
    if not folder or not (Path(folder) / f"{name}.hold").exists():
        return
    (Path(folder) / f"{name}.reached").write_text(str(os.getpid()))
    while not (Path(folder) / f"{name}.release").exists():
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------- checkpoints


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """A safetensors file of float32 tensors: an 8-byte little-endian header length, the JSON header
    (padded to 8 bytes), then the raw data."""
    header: dict[str, Any] = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, tensor in tensors.items():
        data = np.ascontiguousarray(tensor, dtype="<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def write_checkpoint(out_dir: Path, kind: str, digest: str, history: list[dict[str, float]]) -> None:
    """A fake checkpoint in `out_dir`: weights drawn from `digest`, a config naming the fake, and the
    training log. Its content depends on `digest` alone."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = _rng(digest).standard_normal(WEIGHTS).astype(np.float32)
    write_safetensors(out_dir / WEIGHTS_FILE, {"weight": weights}, {"format": "pt", "fake_of": kind})
    config = {"model_type": MODEL_TYPE, "fake_of": kind, "inputs_digest": digest}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    (out_dir / LOG_FILE).write_text(json.dumps({"log_history": history}, indent=2, sort_keys=True))


def _report_curve(history: list[dict[str, float]], reporting: Any, task: str) -> None:
    """Feed the training log to a `Reporting` (its `on_log` curve and progress lines), as a trainer does."""
    on_log = getattr(reporting, "on_log", None)
    progress = Progress(task, len(history), getattr(reporting, "report", None), unit="steps", every_s=0.0)
    for step, logs in enumerate(history, start=1):
        if on_log is not None:
            on_log(step, logs)
        progress.update(1, **{k: v for k, v in logs.items() if k in ("loss", "train_loss")})


def _train_result(history, max_length, source, rows, tokens, started, **extra):
    from real_assets.core.train_config import TrainResult

    return TrainResult(
        history=history,
        max_length=max_length,
        max_length_source=source,
        rows=rows,
        pairs_truncated=0,
        pairs_dropped_too_long=0,
        tokens=tokens,
        train_seconds=max(time.perf_counter() - started, 1e-6),
        extra=extra,
    )


def _curve(digest: str, steps: int, keys: Sequence[str]) -> list[dict[str, float]]:
    """A falling loss (and the other `keys`) over `steps` logged steps, then the run's `train_loss`."""
    rng = _rng(digest)
    start = 1.0 + rng.random()
    history = []
    for step in range(1, steps + 1):
        loss = start * (0.8**step)
        logs = {"loss": round(loss, 6), "epoch": float(step) / steps}
        for key in keys:
            logs[key] = round(float(rng.random()), 6)
        history.append(logs)
    history.append({"train_loss": round(float(np.mean([h["loss"] for h in history])), 6)})
    return history


# ---------------------------------------------------------------------------------------------- fakes


def train_reference(corpus, rows, cfg, out_dir: Path, device=None, reporting=None, **kwargs):
    """Fake of `train_reference`: a checkpoint and a TrainResult from (corpus, rows, config)."""
    started = time.perf_counter()
    wait_at_barrier("train_reference")
    rows = [tuple(r) for r in rows]
    if not rows:
        raise ValueError("no SFT row to train on")
    digest = _digest("train_reference", list(corpus), rows, cfg, sorted(kwargs.items()))
    history = _curve(digest, 3, ())
    _report_curve(history, reporting, "sft")
    write_checkpoint(out_dir, "train_reference", digest, history)
    max_length, source = _max_length(getattr(cfg, "max_length", None), rows)
    tokens = sum(len(p.split()) + len(r.split()) for p, r in rows)
    return _train_result(history, max_length, source, len(rows), tokens, started)


def train_dpo(reference_dir, rows, cfg, seed, out_dir: Path, device=None, reporting=None, **kwargs):
    """Fake of `train_dpo`: a checkpoint built on the reference's, and a TrainResult with a DPO curve."""
    started = time.perf_counter()
    wait_at_barrier("train_dpo")
    rows = [tuple(r) for r in rows]
    if not rows:
        raise ValueError("no DPO pair to train on")
    digest = _digest("train_dpo", _checkpoint_digest(reference_dir), rows, cfg, seed, sorted(kwargs.items()))
    history = _curve(digest, 3, ("rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"))
    _report_curve(history, reporting, "dpo")
    write_checkpoint(out_dir, "train_dpo", digest, history)
    max_length, source = _max_length(getattr(cfg, "max_length", None), rows)
    tokens = sum(sum(len(t.split()) for t in row) for row in rows)
    return _train_result(history, max_length, source, len(rows), tokens, started)


def _reward_metrics(digest: str, pairs: Sequence[Any]) -> tuple[dict[str, Any], pd.DataFrame]:
    if not pairs:
        from real_assets.core.evaluation import NO_PAIRS, OUTCOME_COLUMNS

        return dict(NO_PAIRS), pd.DataFrame(columns=OUTCOME_COLUMNS)
    rng = _rng(digest)
    margins = rng.normal(0.2 * rng.random(), 1.0, len(pairs))
    outcome = np.where(margins > 0, 1.0, np.where(margins == 0, 0.5, 0.0))
    ids = [getattr(p, "prompt_id", "") for p in pairs]
    outcomes = pd.DataFrame(
        {
            "metric": ["preference"] * len(ids) + ["margin"] * len(ids),
            "prompt_id": ids * 2,
            "item": list(range(len(ids))) * 2,
            "value": np.concatenate([outcome, margins]),
        }
    )
    return {
        "eval_pairs": len(pairs),
        "preference_accuracy": float(outcome.mean()),
        "preference_ties": float((margins == 0).mean()),
        "reward_margin": float(margins.mean()),
        "eval_pairs_truncated": 0,
        "eval_pairs_dropped_too_long": 0,
    }, outcomes


def _win_rate(digest: str, prompts, scorer, samples: int) -> tuple[dict[str, Any], pd.DataFrame]:
    if scorer is None or not prompts:
        from real_assets.core.evaluation import NO_WIN_RATE, OUTCOME_COLUMNS

        return dict(NO_WIN_RATE), pd.DataFrame(columns=OUTCOME_COLUMNS)
    from real_assets.core.scoring import wilson_interval

    rng = _rng(_digest(digest, "win"))
    ids = [i for i, _ in prompts for _ in range(samples)]
    policy_q, reference_q = rng.random(len(ids)), rng.random(len(ids))
    outcome = np.where(policy_q > reference_q, 1.0, np.where(policy_q == reference_q, 0.5, 0.0))
    low, high = wilson_interval(float(outcome.sum()), len(ids))
    outcomes = pd.DataFrame(
        {"metric": "win", "prompt_id": ids, "item": list(range(len(ids))), "value": outcome}
    )
    return {
        "win_rate": float(outcome.mean()),
        "win_rate_ci_low": low,
        "win_rate_ci_high": high,
        "win_comparisons": len(ids),
        "win_ties": float(np.mean(outcome == 0.5)),
        "policy_quality": float(policy_q.mean()),
        "reference_quality": float(reference_q.mean()),
    }, outcomes


def evaluate_policy(
    policy_dir, reference_dir, pairs, prompts, scorer, config, scoring, device=None, seed_offset=0, **kwargs
):
    """Fake of `evaluate_policy`: the same metric fields and per-item outcomes, drawn from the two
    checkpoints, the held-out items, the configs and the seed."""
    wait_at_barrier("evaluate_policy")
    digest = _digest(
        "evaluate_policy",
        _checkpoint_digest(policy_dir),
        _checkpoint_digest(reference_dir),
        list(pairs),
        list(prompts),
        config,
        scoring,
        seed_offset,
    )
    metrics, outcomes = _reward_metrics(digest, pairs)
    win_metrics, win_outcomes = _win_rate(digest, prompts, scorer, getattr(config, "samples_per_prompt", 1))
    return metrics | win_metrics, pd.concat([outcomes, win_outcomes], ignore_index=True)


def train_and_score(reference_dir, rows, dpo, seed, pairs, device=None, report=None, **kwargs):
    """Fake of `train_and_score`: one budget-sweep point's metrics, outcomes and max_length."""
    wait_at_barrier("train_and_score")
    rows = [tuple(r) for r in rows]
    digest = _digest("train_and_score", _checkpoint_digest(reference_dir), rows, dpo, seed, list(pairs))
    if report is not None:
        Progress("budget point", 1, report, unit="points").update(1)
    metrics, outcomes = _reward_metrics(digest, pairs)
    max_length, _ = _max_length(getattr(dpo, "max_length", None), rows)
    return metrics, outcomes, max_length


def reference_pair_scores(reference_dir, pairs: pd.DataFrame, device=None, max_length=None, **kwargs):
    """Fake of `reference_pair_scores`: `ref_margin` and `ches` per pair, each drawn from the reference
    checkpoint and that pair's texts alone (so row order does not matter)."""
    wait_at_barrier("reference_pair_scores")
    reference = _checkpoint_digest(reference_dir)
    margins, ches = [], []
    for prompt, chosen, rejected in zip(pairs["prompt"], pairs["chosen"], pairs["rejected"]):
        rng = _rng(_digest(reference, prompt, chosen, rejected, max_length))
        margins.append(float(rng.normal()))
        ches.append(float(rng.normal()))
    return pd.DataFrame({"ref_margin": np.array(margins, dtype=float), "ches": np.array(ches, dtype=float)})


def sample_candidates(policy_dir, todo, cfg, device=None, **kwargs) -> list[tuple[str, int, str]]:
    """Fake of `core.annotation.generation.sample_candidates`: every missing sample of every prompt, a
    deterministic text from the policy checkpoint, the prompt and the sample index (a few words from a small
    vocabulary, so that pairs differ in length and wording)."""
    wait_at_barrier("sample_candidates")
    policy = _checkpoint_digest(policy_dir)
    words = ("water", "tea", "slowly", "first", "then", "boil", "steep", "cool", "pour", "taste", "rinse")
    out = []
    for item in todo:
        for index in sorted(item.missing):
            rng = _rng(_digest(policy, item.prompt, index, getattr(cfg, "seed", 0)))
            text = " ".join(rng.choice(words, size=int(rng.integers(3, 12))))
            out.append((item.prompt_id, index, text.capitalize() + "."))
    return out


def hashed_words_encoder() -> Callable[[list[str]], np.ndarray]:
    """The fake embedder (feature hashing, no model): each lowercased word of a text adds +-1 at a position
    and sign drawn from its crc32, and the whole text adds one more, so no vector is zero. Texts that share
    words point the same way, so cosine still orders pairs from alike to unlike; equal texts embed equally.
    Rows are not normalised (`core.embedding.embed_with` does that)."""

    def encode(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), FAKE_EMBEDDING_DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in [*_WORD.findall(text.lower()), "\0" + text]:
                code = zlib.crc32(token.encode())
                out[row, code % FAKE_EMBEDDING_DIM] += 1.0 if code >> 31 else -1.0
        return out

    return encode


FAKES: dict[str, Callable[..., Any]] = {
    fake.__name__: fake
    for fake in (
        train_reference,
        train_dpo,
        evaluate_policy,
        train_and_score,
        reference_pair_scores,
        sample_candidates,
    )
}
"""The fake of each model function that assets pass to `Compute.run`, by the function's name."""
