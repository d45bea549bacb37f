"""The DPO step as a program of its own, for `accelerate launch` (DDP over GPUs, or CPU processes over
gloo; FSDP or DeepSpeed through an accelerate config file), started by the `dpo_checkpoint` asset through
Dagster Pipes. Every process trains on its share of the batches; the first one writes the checkpoint and
talks to Dagster: progress lines into the run log, and the curve and the result as Pipes messages.

    accelerate launch --num_processes 2 -m real_assets.launch_dpo <spec.json>
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pandas as pd

from real_assets.core.device import pick_device
from real_assets.core.train_config import DpoConfig, TrainResult
from real_assets.core.training import Reporting, train_dpo

CURVE = "curve"
RESULT = "result"
"""Keys of the Pipes messages: one `curve` point per trainer log, one `result` at the end."""


def write_spec(folder: Path, reference: Path, rows, cfg: DpoConfig, seed: int, out: Path, **device) -> Path:
    """The launched step's input: the pairs as Parquet and the rest as JSON in `folder`; returns the JSON
    file, the one argument of this program."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = folder / "pairs.parquet"
    pd.DataFrame(list(rows), columns=["prompt", "chosen", "rejected"]).to_parquet(pairs)
    spec = {
        "reference": str(reference),
        "pairs": str(pairs),
        "config": dataclasses.asdict(cfg),
        "seed": seed,
        "out": str(out),
        **device,
    }
    path = folder / "spec.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


def train(spec: dict, on_log=None, report=None) -> TrainResult:
    """`train_dpo` on the spec's pairs, in this process (one of the launched ones)."""
    pairs = pd.read_parquet(spec["pairs"])
    rows = list(zip(pairs["prompt"], pairs["chosen"], pairs["rejected"]))
    device = pick_device(spec.get("device", "auto"), spec.get("half_precision", True))
    cfg = DpoConfig(**spec["config"])
    reference, out = Path(spec["reference"]), Path(spec["out"])
    return train_dpo(reference, rows, cfg, spec["seed"], out, device, Reporting(on_log, report))


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    if int(os.environ.get("RANK", "0")) != 0:
        train(spec)
        return 0
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:

        def on_log(step: int, logs: dict[str, float]) -> None:
            pipes.report_custom_message({CURVE: [step, logs]})

        result = train(spec, on_log, pipes.log.info)
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        pipes.report_custom_message({RESULT: dataclasses.asdict(result), "processes": processes})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
