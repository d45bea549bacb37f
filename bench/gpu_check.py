"""GPU check: the core path of real-assets on CUDA, with ratios and throughputs, in a few minutes.

    bash bench/gpu_check.sh --prepare          # here (PyPI reachable): fills .gpu_check/
    bash bench/gpu_check.sh                    # on the GPU machine, .gpu_check/ carried along
    bash bench/gpu_check.sh --device cpu --quick   # the CPU variant (tests/test_gpu_check.py)

What it runs, all through `real_assets.core` (the code the assets call; no Dagster, no MLflow, so the GPU
machine needs neither):

1. embedding: `embed_texts` (ours: the model loaded per call, batches longest-first, progress counted) in
   the device's half precision (`pick_device`: bf16 where supported, else fp16; float32 on CPU) against a bare
   `SentenceTransformer.encode` of the same model, dtype, texts and batch size; alternating repeats, medians,
   ratio ours/bare (above 1: ours slower), texts/s, and the largest difference between the two outputs.
2. SFT (`train_sft`) of a GPT-2-style policy built from a config, with the trainer in bf16/fp16 mixed
   precision on CUDA: steps/s, examples/s, tokens/s, peak GPU memory.
3. DPO (`train_dpo`) from that checkpoint on synthetic pairs: the same figures.
4. eval scoring (`evaluate_policy` with the synthetic gold scorer): held-out pairs/s (log-probabilities
   of policy and reference) and generated tokens/s, as one timed call.

The embedder is all-MiniLM-L6-v2's architecture and tokenizer (config and tokenizer files of the packaged
model, 0.8 MB) with seeded random weights: the packaged weights are 87 MiB, over the 64 MiB that travels to
the GPU machine. Speed does not depend on the weights' values; both sides load the same ones.

`--prepare` writes .gpu_check/embedder/ (those files) and .gpu_check/wheels/ (what the GPU image lacks, for
its Python 3.12: trl, datasets, dill, multiprocess, pyarrow>=24 for datasets), and prints their size.
Results: printed, and written as JSON to bench/out/gpu_check.json (and to $OUT when that is set).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DEST = ROOT / ".gpu_check"
OUT = Path(__file__).resolve().parent / "out"
CARRY_LIMIT_MIB = 64
EMBEDDER_FILES = (
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "1_Pooling/config.json",
)
# What the GPU image (Python 3.12, torch, transformers, sentence-transformers, accelerate, pandas, ...)
# lacks for real_assets.core, at the versions of this environment (pyarrow: datasets 5 needs 24 or newer,
# and the image's may be older).
WHEELS_PY = "3.12"
WHEEL_PACKAGES = ("trl", "datasets", "dill", "multiprocess", "pyarrow")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


@dataclass(frozen=True)
class Sizes:
    texts: int
    repeats: int
    embed_batch: int
    n_layer: int
    n_embd: int
    n_head: int
    sft_examples: int
    dpo_pairs: int
    train_batch: int
    max_length: int
    eval_pairs: int
    eval_prompts: int
    samples_per_prompt: int
    max_new_tokens: int
    sft_learning_rate: float
    """ReferenceConfig's default (2e-3) is tuned for the default 2-layer model; the check's 6-layer model
    diverged at it in bf16 on an H200 (every weight NaN after SFT), so the full size uses 3e-4."""
    default_sft_examples: int
    """The default reference step (ReferenceConfig(): 2-layer model, 2e-3, 12 epochs) on this many examples,
    in the device's dtype: does the pipeline's own default train to finite weights there?"""


FULL = Sizes(
    texts=20_000,
    repeats=3,
    embed_batch=128,
    n_layer=6,
    n_embd=512,
    n_head=8,
    sft_examples=2_000,
    dpo_pairs=1_000,
    train_batch=16,
    max_length=192,
    eval_pairs=400,
    eval_prompts=64,
    samples_per_prompt=2,
    max_new_tokens=32,
    sft_learning_rate=3e-4,
    default_sft_examples=400,
)
QUICK = Sizes(
    texts=48,
    repeats=1,
    embed_batch=16,
    n_layer=1,
    n_embd=32,
    n_head=2,
    sft_examples=16,
    dpo_pairs=16,
    train_batch=8,
    max_length=96,
    eval_pairs=8,
    eval_prompts=2,
    samples_per_prompt=1,
    max_new_tokens=4,
    sft_learning_rate=2e-3,
    default_sft_examples=16,
)


# -------------------------------------------------------------------------------------------- prepare


def prepare(dest: Path) -> dict:
    """The embedder's config and tokenizer files, and the wheels the GPU image lacks, under `dest`."""
    from importlib.metadata import version

    from real_assets.core.embedding import DEFAULT_EMBEDDER, resolve_model_path

    source = Path(resolve_model_path(DEFAULT_EMBEDDER))
    embedder = dest / "embedder"
    shutil.rmtree(embedder, ignore_errors=True)
    for name in EMBEDDER_FILES:
        (embedder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / name, embedder / name)
    wheels = dest / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    requirements = [f"{name}=={version(name)}" for name in WHEEL_PACKAGES]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    target = ["--python-version", WHEELS_PY, "--implementation", "cp", *platforms, "-d", str(wheels)]
    subprocess.run([*pip, *target, *requirements], check=True)
    sizes = {p.name: p.stat().st_size for p in sorted(dest.rglob("*")) if p.is_file()}
    total_mib = sum(sizes.values()) / 2**20
    print(f"prepared {dest}: {len(sizes)} files, {total_mib:.1f} MiB (the carry limit is {CARRY_LIMIT_MIB})")
    for name, size in sizes.items():
        if name.endswith(".whl"):
            print(f"  {name}  {size / 2**20:.1f} MiB")
    if total_mib > CARRY_LIMIT_MIB - 4:  # the working tree travels too
        raise SystemExit(f"{dest} is {total_mib:.1f} MiB: too much to carry")
    return {"dest": str(dest), "mib": total_mib, "files": sizes}


# ------------------------------------------------------------------------------------------------ run


def _synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def _reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def build_embedder(config_dir: Path, out: Path) -> Path:
    """A sentence-transformers folder: MiniLM's config and tokenizer, seeded random weights."""
    import torch
    from transformers import BertConfig, BertModel

    shutil.copytree(config_dir, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(config_dir)).save_pretrained(out, safe_serialization=True)
    return out


def synthetic(n_prompts: int):
    """Prompts with responses and gold quality from the project's synthetic source."""
    from real_assets.core.synthetic import iter_synthetic

    rows = [r for batch in iter_synthetic(n_prompts=n_prompts, seed=0) for r in batch.responses]
    by_prompt: dict[str, list] = {}
    for r in rows:
        by_prompt.setdefault(r.prompt, []).append(r)
    return rows, by_prompt


def check_embedding(embedder: Path, device, sizes: Sizes, texts: list[str]) -> dict:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from real_assets.core.embedding import embed_texts
    from real_assets.core.progress import Progress

    def bare_load():
        return SentenceTransformer(str(embedder), device=device.device, model_kwargs={"dtype": device.dtype})

    def bare_encode(model):
        return model.encode(
            texts, batch_size=sizes.embed_batch, normalize_embeddings=True, show_progress_bar=False
        )

    warm = bare_load()  # imports, kernels, page cache: untimed
    warm.encode(texts[: sizes.embed_batch * 2], batch_size=sizes.embed_batch, show_progress_bar=False)
    del warm
    gc.collect()
    ours_s, bare_s, load_s, lines = [], [], [], []
    ours = bare = None
    for _ in range(sizes.repeats):
        _synchronize(device.device)
        started = time.perf_counter()
        model = bare_load()
        _synchronize(device.device)
        load_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        bare = bare_encode(model)
        _synchronize(device.device)
        bare_s.append(time.perf_counter() - started)
        del model
        gc.collect()
        progress = Progress("embed", total=len(texts), report=lines.append, unit="texts", every_s=1.0)
        started = time.perf_counter()
        ours = embed_texts(texts, str(embedder), device, sizes.embed_batch, progress=progress)
        _synchronize(device.device)
        ours_s.append(time.perf_counter() - started)
    ours_med, bare_med, load_med = (statistics.median(x) for x in (ours_s, bare_s, load_s))
    bare = np.asarray(bare, dtype=np.float32)
    return {
        "texts": len(texts),
        "dtype": device.dtype_name,
        "batch_size": sizes.embed_batch,
        "ours_s": ours_med,
        "bare_encode_s": bare_med,
        "bare_load_s": load_med,
        "ratio_vs_encode": ours_med / bare_med,
        "ratio_vs_load_plus_encode": ours_med / (load_med + bare_med),
        "ours_texts_per_s": len(texts) / ours_med,
        "bare_texts_per_s": len(texts) / bare_med,
        "max_abs_diff": float(np.abs(ours - bare).max()),
        "min_cosine": float((ours * bare).sum(1).min()),
        "progress_lines": len(lines),
        "runs": {"ours_s": ours_s, "bare_encode_s": bare_s, "bare_load_s": load_s},
    }


def _final_loss(history: list[dict]) -> float | None:
    """The trainer's mean training loss (logged at the end), else its last logged loss."""
    for key in ("train_loss", "loss"):
        found = [row[key] for row in history if key in row]
        if found:
            return found[-1]
    return None


def sft_rows(by_prompt: dict, prompts: list[str]) -> list[tuple[str, str]]:
    """(prompt, its highest-scored response): what SFT trains on."""
    return [(p, max(by_prompt[p], key=lambda r: r.score).response) for p in prompts]


def eval_prompts(by_prompt: dict, sizes: Sizes) -> list[str]:
    """The prompts eval generates for (the last ones in sort order)."""
    return sorted(by_prompt)[-max(sizes.eval_prompts, 1) :]


def check_default_reference(device, sizes: Sizes, by_prompt: dict, work: Path) -> dict:
    """The pipeline's default reference step, in the device's dtype: finite weights, or where it diverged."""
    from real_assets.core.models import build_base
    from real_assets.core.train_config import ReferenceConfig
    from real_assets.core.training import TrainingDiverged, train_sft

    rows = sft_rows(by_prompt, sorted(by_prompt)[: sizes.default_sft_examples])
    cfg = ReferenceConfig()
    model, tokenizer, _ = build_base(cfg, [p + " " + r for p, r in rows])
    started = time.perf_counter()
    try:
        result = train_sft(model, tokenizer, rows, cfg, work / "default_sft", device)
    except TrainingDiverged as diverged:
        return {"examples": len(rows), "diverged": True, "error": str(diverged)}
    _synchronize(device.device)
    return {
        "examples": len(rows),
        "diverged": False,
        "seconds": time.perf_counter() - started,
        "final_loss": _final_loss(result.history),
    }


def check_training(device, sizes: Sizes, by_prompt: dict, work: Path) -> tuple[dict, dict, Path, Path, int]:
    from real_assets.core.models import build_base
    from real_assets.core.train_config import DpoConfig, ReferenceConfig
    from real_assets.core.training import Reporting, train_dpo, train_sft

    prompts = sorted(by_prompt)
    sft_data = sft_rows(by_prompt, prompts[: sizes.sft_examples])
    shape = {"n_layer": sizes.n_layer, "n_embd": sizes.n_embd, "n_head": sizes.n_head}
    common = {"epochs": 1.0, "batch_size": sizes.train_batch, "max_length": sizes.max_length}
    sft_cfg = ReferenceConfig(**shape, **common, learning_rate=sizes.sft_learning_rate)
    model, tokenizer, _ = build_base(sft_cfg, [p + " " + r for p, r in sft_data])
    params = sum(p.numel() for p in model.parameters())
    lines: list[str] = []

    _reset_peak(device.device)
    sft_dir = work / "sft"
    started = time.perf_counter()
    result = train_sft(model, tokenizer, sft_data, sft_cfg, sft_dir, device, Reporting(report=lines.append))
    _synchronize(device.device)
    sft = _training_figures(result, time.perf_counter() - started, sizes, device, "examples")
    sft["params"] = params

    pairs = []
    for p in prompts:
        ranked = sorted(by_prompt[p], key=lambda r: r.score, reverse=True)
        pairs.append((p, ranked[0].response, ranked[-1].response))
    _reset_peak(device.device)
    dpo_dir = work / "dpo"
    started = time.perf_counter()
    dpo_cfg = DpoConfig(**common)
    result = train_dpo(
        sft_dir, pairs[: sizes.dpo_pairs], dpo_cfg, 0, dpo_dir, device, Reporting(report=lines.append)
    )
    _synchronize(device.device)
    dpo = _training_figures(result, time.perf_counter() - started, sizes, device, "pairs")
    return sft, dpo, sft_dir, dpo_dir, result.max_length


def _training_figures(result, seconds: float, sizes: Sizes, device, unit: str) -> dict:
    steps = -(-result.rows // sizes.train_batch)
    return {
        unit: result.rows,
        "steps": steps,
        "seconds": seconds,
        "train_seconds": result.train_seconds,
        "steps_per_s": steps / result.train_seconds,
        f"{unit}_per_s": result.rows / result.train_seconds,
        "tokens_per_s": result.tokens_per_s,
        "max_length": result.max_length,
        "final_loss": _final_loss(result.history),
        "peak_gpu_gib": _peak_gib(device.device),
    }


def check_finite(device, prompts: list[str], checkpoints: dict[str, Path]) -> dict:
    """Non-finite weights and next-token logits of each checkpoint, in the device's dtype and in float32.

    Run before eval: a NaN there ends sampling in a device-side assert that takes the CUDA context with it.
    """
    import torch

    from real_assets.core.device import DeviceChoice
    from real_assets.core.lengths import format_prompt
    from real_assets.core.models import load_policy

    report = {}
    for name, path in checkpoints.items():
        for dtype in dict.fromkeys([device.dtype, torch.float32]):
            model, tokenizer = load_policy(path, DeviceChoice(device.device, dtype))
            tokenizer.padding_side = "left"
            enc = tokenizer(
                [format_prompt(p) for p in prompts],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(device.device)
            with torch.no_grad():
                logits = model(**enc).logits[:, -1, :].float()
            report[f"{name}/{str(dtype).removeprefix('torch.')}"] = {
                "nonfinite_weights": sum(int((~torch.isfinite(w)).sum()) for w in model.parameters()),
                "rows_with_nonfinite_logits": int((~torch.isfinite(logits)).any(dim=-1).sum()),
                "rows": len(prompts),
                "max_abs_logit": float(logits.nan_to_num(0.0, 0.0, 0.0).abs().max()),
            }
            del model
    print("finite     " + "; ".join(f"{k}: {v}" for k, v in report.items()), flush=True)
    return report


def check_eval(device, sizes: Sizes, by_prompt: dict, policy: Path, reference: Path, max_length: int) -> dict:
    from real_assets.core.evaluation import EvalConfig, HeldOutPair, Scoring, evaluate_policy, gold_scorer

    prompts = [(f"p{i}", p) for i, p in enumerate(eval_prompts(by_prompt, sizes))]
    pairs = []
    for p in sorted(by_prompt):
        ranked = sorted(by_prompt[p], key=lambda r: r.gold, reverse=True)
        if ranked[0].gold != ranked[-1].gold:
            pairs.append(HeldOutPair(p, ranked[0].response, ranked[-1].response))
    pairs = pairs[: sizes.eval_pairs]
    cfg = EvalConfig(samples_per_prompt=sizes.samples_per_prompt, max_new_tokens=sizes.max_new_tokens)
    scoring = Scoring(beta=0.2, max_length=max_length)
    _reset_peak(device.device)
    started = time.perf_counter()
    metrics, _ = evaluate_policy(policy, reference, pairs, prompts, gold_scorer, cfg, scoring, device)
    _synchronize(device.device)
    seconds = time.perf_counter() - started
    generated = 2 * len(prompts) * sizes.samples_per_prompt * sizes.max_new_tokens  # at most, both models
    return {
        "pairs": len(pairs),
        "prompts": len(prompts),
        "seconds": seconds,
        "scored_sequences_per_s": 4 * len(pairs) / seconds,  # 2 responses x (policy, reference)
        "generated_tokens_per_s_upper": generated / seconds,
        "preference_accuracy": metrics.get("preference_accuracy"),
        "win_rate": metrics.get("win_rate"),
        "peak_gpu_gib": _peak_gib(device.device),
    }


def run(args) -> dict:
    import torch
    import transformers

    from real_assets.core.device import DeviceChoice, pick_device
    from real_assets.core.training import TrainingDiverged

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    sizes = QUICK if args.quick else FULL
    if args.texts:
        sizes = Sizes(**{**asdict(sizes), "texts": args.texts})
    device = pick_device(args.device)
    started = time.perf_counter()
    report: dict = {
        "device": device.device,
        "dtype": device.dtype_name,
        "gpu": torch.cuda.get_device_name() if device.device == "cuda" else None,
        "sizes": asdict(sizes),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }
    print(
        f"gpu_check on {device.device} ({report['gpu'] or platform.processor() or 'cpu'}), "
        f"dtype {device.dtype_name}, torch {torch.__version__}, {'quick' if args.quick else 'full'} sizes",
        flush=True,
    )
    _, by_prompt = synthetic(max(sizes.texts // 5, sizes.sft_examples, sizes.dpo_pairs) + 8)
    texts = [r.response for rs in by_prompt.values() for r in rs][: sizes.texts]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config_dir = Path(args.embedder) if args.embedder else _default_embedder_config()
        embedder = build_embedder(config_dir, work / "embedder")
        section = time.perf_counter()
        report["embedding"] = check_embedding(embedder, device, sizes, texts)
        report["embedding"]["section_s"] = time.perf_counter() - section
        _print_embedding(report["embedding"])
        report["default_reference"] = check_default_reference(device, sizes, by_prompt, work)
        print(f"default    reference step, {device.dtype_name}: {report['default_reference']}", flush=True)
        try:
            report["sft"], report["dpo"], sft_dir, dpo_dir, max_length = check_training(
                device, sizes, by_prompt, work
            )
        except TrainingDiverged as diverged:  # record it, then measure the rest in float32
            print(f"diverged   {device.dtype_name}: {diverged}; again in float32", flush=True)
            report["diverged"] = {"dtype": device.dtype_name, "error": str(diverged)}
            device = DeviceChoice(device.device, torch.float32)
            report["sft"], report["dpo"], sft_dir, dpo_dir, max_length = check_training(
                device, sizes, by_prompt, work
            )
        _print_training("sft", report["sft"], "examples")
        _print_training("dpo", report["dpo"], "pairs")
        report["finite"] = check_finite(
            device, eval_prompts(by_prompt, sizes), {"policy": dpo_dir, "reference": sft_dir}
        )
        report["eval"] = check_eval(device, sizes, by_prompt, dpo_dir, sft_dir, max_length)
        _print_eval(report["eval"])
    report["total_s"] = time.perf_counter() - started
    print(f"total {report['total_s']:.1f} s")
    _write(report, args.json)
    return report


def _default_embedder_config() -> Path:
    prepared = DEFAULT_DEST / "embedder"
    if prepared.is_dir():
        return prepared
    from real_assets.core.embedding import DEFAULT_EMBEDDER, resolve_model_path

    return Path(resolve_model_path(DEFAULT_EMBEDDER))  # its weights are ignored: rebuilt from the config


def _print_embedding(e: dict) -> None:
    print(
        f"embedding  {e['texts']} texts, {e['dtype']}, batch {e['batch_size']}: ours {e['ours_s']:.2f} s "
        f"({e['ours_texts_per_s']:.0f} texts/s), bare encode {e['bare_encode_s']:.2f} s "
        f"({e['bare_texts_per_s']:.0f} texts/s) + load {e['bare_load_s']:.2f} s | ratio ours/bare "
        f"{e['ratio_vs_encode']:.2f}x vs encode, {e['ratio_vs_load_plus_encode']:.2f}x vs load+encode | "
        f"max abs diff {e['max_abs_diff']:.1e}, min cosine {e['min_cosine']:.4f}, "
        f"{e['progress_lines']} progress lines",
        flush=True,
    )


def _print_training(name: str, t: dict, unit: str) -> None:
    peak = f", peak {t['peak_gpu_gib']:.2f} GiB" if t["peak_gpu_gib"] is not None else ""
    print(
        f"{name:<10} {t[unit]} {unit}, {t['steps']} steps in {t['train_seconds']:.2f} s of training "
        f"({t['seconds']:.2f} s with set-up): "
        f"{t['steps_per_s']:.2f} steps/s, {t[f'{unit}_per_s']:.1f} {unit}/s, "
        f"{t['tokens_per_s']:.0f} tokens/s{peak}, final loss {t['final_loss']}",
        flush=True,
    )


def _print_eval(e: dict) -> None:
    print(
        f"eval       {e['pairs']} pairs + {e['prompts']} prompts in {e['seconds']:.2f} s: "
        f"{e['scored_sequences_per_s']:.0f} scored sequences/s, <= {e['generated_tokens_per_s_upper']:.0f} "
        f"generated tokens/s, preference accuracy {e['preference_accuracy']}",
        flush=True,
    )


def _write(report: dict, path: str | None) -> None:
    targets = [Path(path)] if path else [OUT / "gpu_check.json"]
    if os.environ.get("OUT"):
        targets.append(Path(os.environ["OUT"]) / "gpu_check.json")
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {target}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", action="store_true", help="fill --dest for the GPU machine, then stop")
    ap.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="what --prepare writes (carried)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu", "auto"])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds on CPU)")
    ap.add_argument("--texts", type=int, help="texts to embed (default: 20000, quick: 48)")
    ap.add_argument("--embedder", help="folder with the embedder's config and tokenizer files")
    ap.add_argument("--json", help="where to write the results (default bench/out/gpu_check.json)")
    args = ap.parse_args(argv)
    if args.prepare:
        prepare(args.dest)
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
