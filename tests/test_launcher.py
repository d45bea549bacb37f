"""The DPO step under `accelerate launch` with 2 CPU processes (DDP over gloo), through Dagster Pipes:
the checkpoint is written once, the curve and the result come back to the asset."""

import dagster as dg
import pytest
from safetensors.torch import load_file

from real_assets.core.device import pick_device
from real_assets.core.synthetic import iter_synthetic
from real_assets.core.train_config import DpoConfig, ReferenceConfig
from real_assets.core.training import train_reference
from real_assets.defs.launcher import launch_dpo
from real_assets.resources import Compute

pytestmark = pytest.mark.slow


def test_accelerate_launch_with_two_cpu_processes_writes_a_checkpoint_and_a_curve(tmp_path):
    by_prompt: dict[str, list] = {}
    for batch in iter_synthetic(n_prompts=12):
        for r in batch.responses:
            by_prompt.setdefault(r.prompt, []).append(r)
    ranked = [sorted(responses, key=lambda r: -r.score) for responses in by_prompt.values()]
    rows = [(best.prompt, best.response, worst.response) for best, *_, worst in ranked]
    reference = tmp_path / "reference"
    train_reference(
        [f"{p} {c} {r}" for p, c, r in rows],
        [(p, c) for p, c, _ in rows],
        ReferenceConfig(epochs=1),
        reference,
        pick_device("cpu"),
    )
    out = tmp_path / "policy"
    curve: list[tuple[int, dict]] = []
    launched = {}

    @dg.asset
    def launched_dpo(context: dg.AssetExecutionContext):
        compute = Compute(device="cpu", dpo_launcher="accelerate", launch_processes=2)
        cfg = DpoConfig(epochs=2, batch_size=2, logging_steps=1)
        launched["result"], launched["where"] = launch_dpo(
            context, compute, reference, rows, cfg, 0, out, lambda step, logs: curve.append((step, logs))
        )
        return dg.MaterializeResult()

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([launched_dpo], instance=instance)
    assert result.success
    assert launched["where"] == "accelerate: 2 processes (subprocess)"
    train = launched["result"]
    assert train.rows == len(rows) and train.history
    # the two processes share each step's batches: half the optimizer steps of one process
    steps = [step for step, logs in curve if "loss" in logs]
    assert steps and max(steps) == 2 * -(-train.rows // 4)
    assert {"rewards/margins", "rewards/accuracies"} <= set().union(*(logs for _, logs in curve))
    assert load_file(out / "model.safetensors") and not (tmp_path / "policy.launch").exists()
    lines = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any(line.startswith("progress dpo") for line in lines)
