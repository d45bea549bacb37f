"""Compute: where the torch steps run (this process, CUDA when present, or a Ray cluster) and with which
model backend (real training, or the fakes of `core.fake_models` for tests of the orchestration)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, TypeVar

import dagster as dg
import numpy as np

from real_assets.core.device import DeviceChoice, on_device, pick_device
from real_assets.core.embedding import embed_chunks
from real_assets.core.fake_models import FAKE_EMBEDDER
from real_assets.core.progress import Progress

T = TypeVar("T")


class Compute(dg.ConfigurableResource):
    """Where the torch steps run: in this process (`engine="local"`, the default) on CUDA when present (half
    precision there), else CPU; or on a Ray cluster (`engine="ray"`): embeddings by a pool of Ray actors,
    each model step (SFT, every DPO partition, eval) as a Ray task with the GPUs it asks for, so partitions
    that Dagster runs side by side train on different GPUs. The asset, its MLflow run and its metadata stay
    in the Dagster step either way."""

    device: str = "auto"
    """auto, cuda or cpu; on Ray it is resolved on the worker that runs the step."""
    half_precision: bool = True
    embed_batch_size: int = 128
    engine: Literal["local", "ray"] = "local"
    ray_address: str = ""
    """The cluster (`ray://head:10001`, or `auto` on a cluster node); empty: `$RAY_ADDRESS`, else a Ray
    instance started in the step's process."""
    step_gpus: float = -1.0
    """GPUs a model step asks Ray for; -1: one when the cluster has GPUs, else none."""
    step_cpus: float = 1.0
    """CPUs a model step asks Ray for."""
    embed_actors: int = 0
    """Embedding actors on Ray; 0: one per GPU, or one per two CPUs on a CPU-only cluster."""
    dpo_launcher: Literal["in_process", "accelerate"] = "in_process"
    """`accelerate`: each DPO partition runs under `accelerate launch` with `launch_processes` processes
    (DDP over GPUs; CPU processes over gloo without CUDA), through Dagster Pipes: a subprocess on the
    local engine, a Ray job on `ray`."""
    launch_processes: int = 2
    accelerate_config: str = ""
    """An accelerate config file (FSDP, DeepSpeed, several machines); empty: DDP on this machine."""
    ray_dashboard: str = ""
    """The Ray job server for launched steps (`http://head:8265`); empty: Ray's own lookup
    (`$RAY_API_SERVER_ADDRESS`, `$RAY_ADDRESS`, then the local default)."""
    model_backend: Literal["torch", "fake"] = "torch"
    """`fake`: every model step runs its stand-in from `core.fake_models` (a small real checkpoint and
    deterministic figures, no torch), for tests and dry runs of the orchestration."""

    def choice(self) -> DeviceChoice:
        return pick_device(self.device, self.half_precision)

    def local_dtype(self) -> str | None:
        """The dtype model steps run in on the local engine; None on Ray (the worker picks it) and with the
        fake backend (no model)."""
        if self.engine != "local" or self.model_backend == "fake":
            return None
        return self.choice().dtype_name

    def embedder_id(self, model_id: str) -> str:
        """The embedder that runs for a configured `model_id`: itself, or with the fake model backend the
        fake embedder (`core.fake_models.FAKE_EMBEDDER`), which is what its rows record."""
        return FAKE_EMBEDDER if self.model_backend == "fake" else model_id

    def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> tuple[T, str]:
        """`fn(*args, device=..., **kwargs)` where the engine puts it (`OnDevice` arguments built there),
        and a description of where it ran (device, and Ray resources on Ray). Callable keyword arguments
        (`report`, and those in a `Reporting`) are called in this process as the step goes, on either
        engine. With the fake model backend, `fn`'s fake runs instead (and `OnDevice` arguments are not
        built)."""
        if self.model_backend == "fake":
            from real_assets.core.fake_models import fake_for

            fn = fake_for(fn)
            if self.engine == "local":
                return fn(*args, device=None, **kwargs), "fake"
        if self.engine == "local":
            device = self.choice()
            return fn(*on_device(args, device), device=device, **on_device(kwargs, device)), device.device
        from real_assets.core import distributed

        resources = distributed.connect(self.ray_address)
        result, placement = distributed.run_step(
            fn,
            args,
            kwargs,
            device=self.device,
            half_precision=self.half_precision,
            num_cpus=self.step_cpus,
            num_gpus=distributed.gpus_per_step(self.step_gpus, resources),
        )
        return result, placement.describe()

    def embed_chunks(
        self,
        chunks: Iterable[Sequence[str]],
        model_id: str,
        trust_remote_code: bool = False,
        progress: Progress | None = None,
    ) -> tuple[Iterator[np.ndarray], str]:
        """The embeddings of each chunk in turn, on this engine, and where they are computed; a chunk is
        taken from `chunks` only once the previous one's vectors have been handed back. With the fake model
        backend, the fake embedder runs whatever `model_id` says (`embedder_id`)."""
        model_id = self.embedder_id(model_id)
        if self.engine == "local":
            device = None if self.model_backend == "fake" else self.choice()
            vectors = embed_chunks(
                chunks, model_id, device, self.embed_batch_size, trust_remote_code, progress
            )
            return vectors, device.device if device else "fake"
        from real_assets.core import distributed

        return distributed.embed_chunks_on_ray(
            chunks,
            model_id,
            device=self.device,
            half_precision=self.half_precision,
            batch_size=self.embed_batch_size,
            trust_remote_code=trust_remote_code,
            actors=self.embed_actors,
            resources=distributed.connect(self.ray_address),
            progress=progress,
        )
