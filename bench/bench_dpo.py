"""DPO benchmark: the `dpo_checkpoint` asset, materialized in-process, against a bare TRL DPOTrainer run.

    python bench/bench_dpo.py [--n-prompts 120] [--partition "0|all"] [--epochs 1] [--repeats 2]
    python bench/bench_dpo.py --model packaged:smollm2-135m-instruct --lora-r 8 --max-length 128 \
        --n-prompts 24 --partition "0|easy" --batch-size 8

Set-up (untimed): a fresh home with the synthetic source (--n-prompts), embeddings, similarity, pair
candidates, the reference policy (SFT of --model: the builtin tiny GPT-2 by default, or a pretrained model
with a LoRA adapter when --lora-r > 0) and selected_pairs[--partition].

With --lora-r, both sides train a new LoRA adapter (the same peft LoraConfig) over the reference (its SFT
adapter merged), and both take the reference log-probabilities from the same weights with the adapter off;
the baseline gets the rows in TRL's conversational format, so TRL applies the chat template itself.

* ours: `dg.materialize` of dpo_checkpoint[--partition] (the whole asset: reading the pairs, MLflow run,
  dataset logging, our tokenization and prompt-from-the-left fitting, length-grouped batches, TRL training,
  saving, hashing the checkpoint, models.checkpoints, model registration).
* baseline: `trl.DPOTrainer` on the same (prompt, chosen, rejected) texts in TRL's own format, from the same
  reference checkpoint, with the same DPOConfig settings (beta, learning rate, epochs, batch size, seed,
  and the max_length ours derived), TRL's own tokenization and random batches; `train()` plus
  `save_pretrained`. Trainer construction (TRL tokenizes there) is inside the timed part.

Each side runs --repeats times, alternating; medians reported. Ratio is ours/baseline (above 1: ours is
slower). Tokens/s of ours is the asset's own figure (non-padding tokens over all epochs / train seconds).
Writes bench/out/dpo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-prompts", type=int, default=120)
    parser.add_argument("--partition", default="0|all")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--sft-epochs", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="builtin:tiny-gpt2", help="the reference's base_model")
    parser.add_argument("--lora-r", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench_dpo_"))
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from real_assets.cli import quiet_libraries
    from real_assets.homes import instance_of, prepare_home

    locations = prepare_home(str(home))
    quiet_libraries()
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from real_assets.core.device import pick_device
    from real_assets.core.lengths import conversation, format_completion, format_prompt, uses_chat_template
    from real_assets.core.models import load_merged, load_tokenizer
    from real_assets.core.train_config import DpoConfig as OurDpoConfig
    from real_assets.definitions import resources_for
    from real_assets.defs.training import read_selected_pairs, recorded_checkpoint
    from real_assets.demo import materialize as materialize_assets

    instance = instance_of(locations)

    def materialize(names, partition=None, ops=None):
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        result = materialize_assets(names, instance, partition, ops, run_config=quiet, home=home)
        assert result.success
        return result

    started = time.perf_counter()
    materialize(
        ["raw_responses", "response_embeddings", "response_similarity", "pair_candidates"],
        ops={"raw_responses": {"n_prompts": args.n_prompts}},
    )
    lora = {"lora_r": args.lora_r, "batch_size": args.batch_size}
    if args.max_length:
        lora["max_length"] = args.max_length
    reference_config = {"epochs": args.sft_epochs, "base_model": args.model, **lora}
    if args.lora_r:
        reference_config["learning_rate"] = 2e-4
    materialize(["reference_policy"], ops={"reference_policy": reference_config})
    materialize(["selected_pairs"], args.partition)
    setup_s = time.perf_counter() - started
    seed, strategy = args.partition.split("|")
    warehouse = resources_for(locations)["warehouse"]
    pairs = read_selected_pairs(warehouse, strategy, int(seed))
    with warehouse.connect(read_only=True) as con:
        reference_version = con.execute(
            "select data_version from models.checkpoints where asset = 'reference_policy'"
        ).fetchone()[0]
    reference, _ = recorded_checkpoint(warehouse, "reference_policy", reference_version)
    dpo_config = {"epochs": args.epochs, **lora}
    cfg = OurDpoConfig(**dpo_config)
    device = pick_device("auto")
    chat = uses_chat_template(load_tokenizer(reference))

    def row(prompt: str, chosen: str, rejected: str) -> dict:
        if chat:  # TRL's conversational format: TRL renders the chat template
            reply = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
            return {"prompt": conversation(prompt), "chosen": reply(chosen), "rejected": reply(rejected)}
        return {
            "prompt": format_prompt(prompt),
            "chosen": format_completion(chosen),
            "rejected": format_completion(rejected),
        }

    rows = [row(*texts) for texts in zip(pairs["prompt"], pairs["chosen"], pairs["rejected"])]

    ours_s, bare_s, ours_meta = [], [], {}
    for repeat in range(args.repeats):
        t0 = time.perf_counter()
        result = materialize(["dpo_checkpoint"], args.partition, {"dpo_checkpoint": dpo_config})
        ours_s.append(time.perf_counter() - t0)
        mat = next(m for m in result.get_asset_materialization_events())
        ours_meta = {k: getattr(v, "value", v) for k, v in mat.materialization.metadata.items()}

        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            torch.manual_seed(int(seed))
            tokenizer = load_tokenizer(reference)
            model = load_merged(reference, torch.float32)  # the same as ours: adapters merged
            trainer = DPOTrainer(
                model=model,
                args=DPOConfig(
                    output_dir=out,
                    learning_rate=cfg.learning_rate,
                    num_train_epochs=cfg.epochs,
                    per_device_train_batch_size=cfg.batch_size,
                    max_length=int(ours_meta["max_length"]),
                    beta=cfg.beta,
                    seed=int(seed),
                    data_seed=int(seed),
                    logging_steps=cfg.logging_steps,
                    save_strategy="no",
                    activation_checkpointing=cfg.gradient_checkpointing,  # as ours (TRL defaults it on)
                    # the precision ours picks (TRL defaults to bf16 autocast, slow on most CPUs)
                    bf16=device.dtype == torch.bfloat16,
                    fp16=device.dtype == torch.float16,
                    report_to="none",
                    disable_tqdm=True,
                    log_level="warning",
                    use_cpu=not torch.cuda.is_available(),
                    dataloader_num_workers=0,
                ),
                train_dataset=Dataset.from_list(rows),
                processing_class=tokenizer,
                peft_config=cfg.lora.peft_config(),
            )
            trainer.train()
            trainer.model.save_pretrained(out, safe_serialization=True)
            bare_s.append(time.perf_counter() - t0)
        print(f"repeat {repeat}: ours {ours_s[-1]:.1f} s, bare TRL {bare_s[-1]:.1f} s", flush=True)

    ours, bare = statistics.median(ours_s), statistics.median(bare_s)
    report = {
        "partition": args.partition,
        "model": args.model,
        "lora_r": args.lora_r,
        "pairs": len(rows),
        "epochs": args.epochs,
        "max_length": ours_meta.get("max_length"),
        "pairs_truncated": ours_meta.get("pairs_truncated"),
        "ours_s": ours_s,
        "bare_trl_s": bare_s,
        "ours_median_s": ours,
        "bare_median_s": bare,
        "ratio_ours_over_bare": ours / bare,
        "ours_train_seconds": ours_meta.get("train_seconds"),
        "ours_tokens_per_s": ours_meta.get("tokens_per_s"),
        "setup_s": setup_s,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}",
    }
    out_dir = Path(__file__).resolve().parent / "out"
    out_dir.mkdir(exist_ok=True)
    name = "dpo.json" if not args.lora_r else f"dpo_lora_r{args.lora_r}.json"
    (out_dir / name).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
