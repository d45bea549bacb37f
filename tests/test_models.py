"""Base models and formats without training: packaged GGUF conversion and its errors, chat templates,
fitting templated prompts (oldest turns first), LoRA settings, adapter parents."""

import json
import shutil

import pytest

from real_assets.core.lengths import (
    conversation,
    encode,
    fit,
    format_completion,
    format_prompt,
    prompt_ids,
    uses_chat_template,
)
from real_assets.core.models import (
    LoraSettings,
    ModelError,
    build_tokenizer,
    convert_gguf,
    packaged_gguf,
    parent_of,
)

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HH = "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: How do I make tea?\n\nAssistant:"


@pytest.fixture(scope="module")
def chat_tokenizer():
    """A small BPE tokenizer with a ChatML template (the shape of SmolLM2's), trained in a second."""
    corpus = [format_prompt("How do I make tea?") + format_completion("Boil water and steep it.")] * 4
    tokenizer = build_tokenizer([*corpus, "<|im_start|>user<|im_end|> assistant"], 400)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    tokenizer.eos_token = "<|im_end|>"
    return tokenizer


def test_hh_transcripts_become_alternating_turns_and_other_prompts_one_user_turn():
    assert conversation(HH) == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "How do I make tea?"},
    ]
    assert conversation("What is 2 + 2?") == [{"role": "user", "content": "What is 2 + 2?"}]
    # text before the first marker is not a transcript: kept whole as one user turn
    assert conversation("Note:\n\nHuman: hi\n\nAssistant:") == [
        {"role": "user", "content": "Note:\n\nHuman: hi\n\nAssistant:"}
    ]


def test_chat_prompts_go_through_the_template_and_completions_close_the_turn(chat_tokenizer):
    tok = chat_tokenizer
    assert uses_chat_template(tok)
    prompt, (completion,) = encode(tok, HH, ["Boil water."])
    text = tok.decode(prompt)
    assert text.count("<|im_start|>user") == 2 and text.endswith("<|im_start|>assistant\n")
    assert "Human:" not in text
    assert tok.decode(completion) == "Boil water.<|im_end|>"


def test_a_long_chat_loses_its_oldest_turns_first_and_keeps_the_role_markers(chat_tokenizer):
    tok = chat_tokenizer
    long_first = HH.replace("Hi there", "Hi there " + "very " * 60)
    full = len(prompt_ids(tok, long_first))
    last_turn_only = len(prompt_ids(tok, "How do I make tea?"))
    fitted = fit(tok, long_first, ["Boil water."], max_length=last_turn_only + 12, min_response_tokens=2)
    assert fitted.truncated and len(fitted.prompt_ids) < full
    text = tok.decode(fitted.prompt_ids)
    assert text.startswith("<|im_start|>user\nHow do I make tea?") and "very" not in text
    # the last user turn alone is too long: its start goes, the markers stay
    long_last = HH.replace("How do I make tea?", "please " * 80 + "How do I make tea?")
    fitted = fit(tok, long_last, ["Boil water."], max_length=40, min_response_tokens=2)
    text = tok.decode(fitted.prompt_ids)
    assert text.startswith("<|im_start|>user\n") and text.endswith("tea?<|im_end|>\n<|im_start|>assistant\n")
    assert len(fitted.prompt_ids) + len(fitted.completions[0]) <= 40
    assert fitted.completions[0] == encode(tok, HH, ["Boil water."])[1][0]


def test_lora_settings_build_a_peft_config_and_zero_means_full_fine_tuning():
    assert LoraSettings(r=0).peft_config() is None
    config = LoraSettings(r=4, alpha=8, target_modules="q_proj, v_proj").peft_config()
    assert config.r == 4 and config.lora_alpha == 8 and set(config.target_modules) == {"q_proj", "v_proj"}
    assert LoraSettings(r=4).peft_config().target_modules == "all-linear"


def test_an_unknown_packaged_model_names_the_known_ones():
    with pytest.raises(ModelError, match="packaged:smollm2-135m-instruct"):
        packaged_gguf("nope")


def test_a_missing_or_truncated_gguf_file_names_the_file_and_writes_nothing(tmp_path):
    models = tmp_path / "models"
    with pytest.raises(ModelError, match=r"missing\.gguf: GGUF file not found"):
        convert_gguf(tmp_path / "missing.gguf", models, "m")
    truncated = tmp_path / "truncated.gguf"
    with open(packaged_gguf("smollm2-135m-instruct"), "rb") as f:
        truncated.write_bytes(f.read(1 << 20))
    import gguf

    reader = gguf.GGUFReader
    with pytest.raises(ModelError, match=r"truncated\.gguf: cannot read as a GGUF model"):
        convert_gguf(truncated, models, "m")
    assert not models.exists() or list(models.iterdir()) == []
    assert gguf.GGUFReader is reader  # the conversion's shared reader is gone after it, even on failure


def test_a_gguf_of_an_unsupported_architecture_is_refused(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "not-an-architecture")
    writer.add_tensor("w", np.zeros((2, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelError, match=r"odd\.gguf: cannot read as a GGUF model"):
        convert_gguf(path, tmp_path / "models", "odd")
    assert list((tmp_path / "models").iterdir()) == []


def test_an_adapter_whose_parent_changed_or_vanished_is_refused(tmp_path):
    parent = tmp_path / "ckpt" / "0123456789abcdef"
    parent.mkdir(parents=True)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    record = {"kind": "checkpoint", "path": "../ckpt/0123456789abcdef", "digest": "0123456789abcdef"}
    (adapter / "parent.json").write_text(json.dumps(record))
    assert parent_of(adapter)[0] == str(parent.resolve())
    (adapter / "parent.json").write_text(json.dumps(record | {"digest": "fedcba9876543210"}))
    with pytest.raises(ModelError, match="has digest 0123456789abcdef"):
        parent_of(adapter)
    shutil.rmtree(parent)
    with pytest.raises(ModelError, match=r"parent model folder .* is missing; rematerialize"):
        parent_of(adapter)
