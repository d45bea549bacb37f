"""The heavy steps on a Ray cluster: embeddings through a pool of Ray actors, and a model step (SFT, DPO,
eval) as one Ray task with the CPUs and GPUs it asks for, its progress lines and curve streamed back to
the caller as they happen. Ray is imported only here and only when the `ray` engine is chosen.

Workers import this package by name: on a cluster, install the project in the workers' image (or ship it
with a `runtime_env`); checkpoints and the Hugging Face cache must be on storage the workers share."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from real_assets.core.device import DeviceChoice, on_device, pick_device
from real_assets.core.fake_models import FAKE_EMBEDDER
from real_assets.core.progress import Progress

FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME")
"""Set on the workers as on the driver when this process starts the connection."""
BLOCK_ROWS = 2048
"""Texts per block: the unit that travels to an embedding actor and back."""
POLL_S = 0.2
"""How often the driver forwards a running step's messages (progress lines, curve points)."""


def connect(address: str = "") -> dict[str, float]:
    """Join the Ray cluster at `address` (empty: `$RAY_ADDRESS`, else a Ray instance started here) unless
    this process is connected already; returns the cluster's resources ({"CPU": n, "GPU": m, ...})."""
    import ray

    if not ray.is_initialized():
        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        ray.init(address=address or None, runtime_env={"env_vars": env} if env else None)
    return dict(ray.cluster_resources())


def gpus_per_step(asked: float, resources: dict[str, float]) -> float:
    """GPUs a step asks for: `asked` when zero or more, else one when the cluster has a GPU, else none."""
    if asked >= 0:
        return asked
    return 1.0 if resources.get("GPU", 0) >= 1 else 0.0


@dataclass(frozen=True)
class Placement:
    """Where a step ran: on which device and with which Ray resources (for the step's metadata)."""

    device: DeviceChoice
    num_cpus: float
    num_gpus: float

    def describe(self) -> str:
        return f"ray:{self.device.device} ({self.num_cpus:g} CPU, {self.num_gpus:g} GPU)"


def run_step(
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
    *,
    device: str,
    half_precision: bool,
    num_cpus: float,
    num_gpus: float,
) -> tuple[Any, Placement]:
    """`fn(*args, device=<picked on the worker>, **kwargs)` as one Ray task holding `num_cpus` and
    `num_gpus`, `OnDevice` arguments built there; returns its result and placement. Callable keyword
    arguments (`report`), and callables in a dataclass argument (`Reporting`), stay here: the task's
    calls to them travel back through a Ray queue and are made in this process while the task runs, so
    the run log and the MLflow curve fill as they do locally. An error in the task is raised here with
    the worker's traceback."""
    import ray
    from ray.util.queue import Queue

    callbacks = _callbacks(kwargs)
    queue = Queue(actor_options={"num_cpus": 0})  # never waits for a CPU that the steps hold
    task = ray.remote(_on_worker).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)
    ref = task.remote(
        fn, list(args), _without(kwargs, callbacks), sorted(callbacks), queue, device, half_precision
    )
    try:
        while True:
            finished, _ = ray.wait([ref], timeout=POLL_S)
            _forward(queue, callbacks)
            if finished:
                break
        result, choice = ray.get(ref)
        _forward(queue, callbacks)
        return result, Placement(choice, num_cpus, num_gpus)
    finally:
        queue.shutdown(force=True)


def _callbacks(kwargs: dict[str, Any]) -> dict[str, Callable[..., Any]]:
    """The callables among keyword arguments, by name, and those held in fields of a dataclass argument
    (`Reporting`), by `name.field`."""
    found = {}
    for name, value in kwargs.items():
        if callable(value) and not dataclasses.is_dataclass(value):
            found[name] = value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for field in dataclasses.fields(value):
                if callable(getattr(value, field.name)):
                    found[f"{name}.{field.name}"] = getattr(value, field.name)
    return found


def _without(kwargs: dict[str, Any], callbacks: dict[str, Callable[..., Any]]) -> dict[str, Any]:
    """`kwargs` with each callback left out (a dataclass keeps its other fields); `_with_forwarders`
    puts a forwarder in each place on the worker."""
    out = dict(kwargs)
    for key in callbacks:
        name, _, field = key.partition(".")
        if field:
            out[name] = dataclasses.replace(out[name], **{field: None})
        else:
            del out[name]
    return out


def _with_forwarders(kwargs: dict[str, Any], names: list[str], queue) -> dict[str, Any]:
    out = dict(kwargs)
    for key in names:
        name, _, field = key.partition(".")
        if field:
            out[name] = dataclasses.replace(out[name], **{field: _Forwarder(queue, key)})
        else:
            out[name] = _Forwarder(queue, key)
    return out


def _forward(queue, callbacks: dict[str, Callable[..., Any]]) -> None:
    while not queue.empty():
        name, args = queue.get()
        callbacks[name](*args)


class _Forwarder:
    """A callback on the worker: its calls are queued for the driver."""

    def __init__(self, queue, name: str):
        self.queue = queue
        self.name = name

    def __call__(self, *args: Any) -> None:
        self.queue.put((self.name, args))


def _on_worker(fn, args, kwargs, callback_names, queue, device: str, half_precision: bool):
    choice = pick_device(device, half_precision)
    kwargs = _with_forwarders(on_device(kwargs, choice), callback_names, queue)
    result = fn(*on_device(args, choice), device=choice, **kwargs)
    return result, choice


# ------------------------------------------------------------------------------------------ embeddings


class _EmbeddingActor:
    """One model per actor, loaded when the actor starts; a block of texts in, normalised vectors out."""

    def __init__(self, model_id: str, device: str, half_precision: bool, batch_size: int, trust: bool):
        from real_assets.core.embedding import load_encoder

        choice = None if model_id == FAKE_EMBEDDER else pick_device(device, half_precision)
        self.encode = load_encoder(model_id, choice, trust)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from real_assets.core.embedding import embed_with

        vectors = embed_with(self.encode, [str(t) for t in batch["text"]], self.batch_size)
        return {"row": batch["row"], "embedding": vectors}


def embedding_pool(actors: int, resources: dict[str, float]) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor): one actor per GPU when the cluster has GPUs, else
    `actors` CPU actors (0: one per two CPUs) sharing the CPUs evenly."""
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return (actors or gpus), 1.0, 1.0
    cpus = max(1.0, resources.get("CPU", 1.0))
    count = actors or max(1, int(cpus // 2))
    return count, max(1.0, cpus // count), 0.0


def embed_chunks_on_ray(
    chunks: Iterable[Sequence[str]],
    model_id: str,
    *,
    device: str,
    half_precision: bool,
    batch_size: int,
    trust_remote_code: bool,
    actors: int,
    resources: dict[str, float],
    progress: Progress | None = None,
) -> tuple[Iterator[np.ndarray], str]:
    """The embeddings of each chunk in turn (as `core.embedding.embed_chunks` gives them), computed by a
    pool of Ray actors that load the model once each; and a description of the pool. A chunk is taken
    from `chunks` only when the previous one's vectors have been handed back, and goes to the actors in
    blocks of `BLOCK_ROWS`, so the driver and the object store hold one chunk at a time, whatever the
    number of chunks. `resources`: the cluster's, as `connect` gives them."""
    count, cpus, gpus = embedding_pool(actors, resources)
    label = f"ray:{'cuda' if gpus else 'cpu'} ({count} actors x {cpus:g} CPU, {gpus:g} GPU)"
    options = {
        "model_id": model_id,
        "device": device if gpus else "cpu",
        "half_precision": half_precision,
        "batch_size": batch_size,
        "trust": trust_remote_code,
    }
    return _embed_on_pool(chunks, count, cpus, gpus, options, progress), label


def _embed_on_pool(
    chunks, count: int, cpus: float, gpus: float, options: dict, progress
) -> Iterator[np.ndarray]:
    import ray
    from ray.util import ActorPool

    pool = None
    try:
        for chunk in chunks:
            texts = [str(t) for t in chunk]
            if not texts:
                continue
            if pool is None:  # the actors start (and load the model) with the first chunk
                actor = ray.remote(num_cpus=cpus, num_gpus=gpus)(_EmbeddingActor)
                pool = ActorPool([actor.remote(**options) for _ in range(count)])
                if progress is not None:
                    progress.update(0)
            blocks = [
                {"row": np.arange(start, start + len(block)), "text": np.asarray(block, dtype=object)}
                for start in range(0, len(texts), BLOCK_ROWS)
                for block in [texts[start : start + BLOCK_ROWS]]
            ]
            vectors = []
            for batch in pool.map(lambda a, block: a.__call__.remote(block), blocks):
                vectors.append(np.asarray(batch["embedding"], dtype=np.float32))
                if progress is not None:
                    progress.update(len(batch["row"]))
            yield np.concatenate(vectors)
    finally:
        while pool is not None and (handle := pool.pop_idle()) is not None:
            ray.kill(handle)
