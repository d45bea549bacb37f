"""The DPO step under `accelerate launch` (`Compute(dpo_launcher="accelerate")`), started through Dagster
Pipes: a subprocess on the local engine, a Ray job through dagster-ray's `PipesRayJobClient` on `ray`.
The launched program (`real_assets.launch_dpo`) streams progress lines into the run log and sends the
curve and its result back as Pipes messages."""

from __future__ import annotations

import shlex
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from real_assets.core.train_config import DpoConfig, TrainResult
from real_assets.launch_dpo import CURVE, RESULT, write_spec
from real_assets.resources import Compute


def accelerate_command(compute: Compute, spec: Path, python: str) -> list[str]:
    """`accelerate launch` of the DPO program: the configured accelerate file, else DDP with
    `launch_processes` processes on this machine (gloo when it has no CUDA)."""
    command = [python, "-m", "accelerate.commands.launch", "--num_processes", str(compute.launch_processes)]
    if compute.accelerate_config:
        command += ["--config_file", compute.accelerate_config]
    elif compute.launch_processes > 1:
        command += ["--multi_gpu", "--num_machines", "1", "--main_process_port", str(_free_port())]
    return [*command, "-m", "real_assets.launch_dpo", str(spec)]


def launch_dpo(
    context: dg.AssetExecutionContext,
    compute: Compute,
    reference: Path,
    rows: list[tuple[str, str, str]],
    cfg: DpoConfig,
    seed: int,
    out: Path,
    on_log: Callable[[int, dict[str, float]], None],
) -> tuple[TrainResult, str]:
    """Train one DPO partition under `accelerate launch` into `out`; returns its result and a description
    of where it ran. The curve goes to `on_log` point by point once the launched step has finished."""
    folder = out.parent / f"{out.name}.launch"
    spec = write_spec(
        folder, reference, rows, cfg, seed, out, device=compute.device, half_precision=compute.half_precision
    )
    try:
        if compute.engine == "ray":
            from dagster_ray import PipesRayJobClient

            from real_assets.core.distributed import connect

            gpus = connect(compute.ray_address).get("GPU", 0) >= compute.launch_processes
            command = accelerate_command(compute, spec, "python")
            invocation = PipesRayJobClient(address=compute.ray_dashboard or None).run(
                context=context,
                submit_job_params={
                    "entrypoint": shlex.join(command),
                    "entrypoint_num_cpus": float(compute.launch_processes),
                    "entrypoint_num_gpus": float(compute.launch_processes if gpus else 0),
                },
            )
            where = "ray job"
        else:
            command = accelerate_command(compute, spec, sys.executable)
            invocation = dg.PipesSubprocessClient().run(context=context, command=command)
            where = "subprocess"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    messages = invocation.get_custom_messages()
    for message in messages:
        if CURVE in message:
            on_log(*message[CURVE])
    final = next((m for m in messages if RESULT in m), None)
    if final is None:
        raise dg.Failure("the launched DPO step ended without reporting its result")
    result = TrainResult(**final[RESULT])
    return result, f"accelerate: {final['processes']} processes ({where})"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
