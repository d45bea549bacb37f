"""The real-model path end to end, offline: the packaged SmolLM2-135M-Instruct (GGUF in a wheel, converted
once) trained with LoRA through the graph, reference SFT, DPO and eval on ~10 pairs of up to 128 tokens (two
steps of each training, 10 held-out pairs), then the audit. Training is the subject here, so this test
trains for real."""

import json
import shutil
from pathlib import Path

import duckdb
import pytest
from conftest import _cli_in_process

from real_assets import cli

pytestmark = pytest.mark.slow

ARGS = [
    *("--preset", "smollm2-cpu", "--n-prompts", "16", "--seeds", "1", "--strategies", "easy"),
    *("--config", 'eval_scores={"samples_per_prompt": 1, "max_new_tokens": 8, "max_eval_pairs": 10}'),
]


@pytest.fixture(scope="module")
def smol_home(tmp_path_factory, home_template):
    home = tmp_path_factory.mktemp("smollm2") / "home"
    _cli_in_process(["demo", "--home", str(home), *ARGS])
    return home


def _checkpoints(home: Path) -> dict[str, tuple[Path, dict]]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute("select asset, path, training from models.checkpoints").fetchall()
    return {asset: (Path(path), json.loads(training)) for asset, path, training in rows}


def test_checkpoints_are_lora_adapters_over_the_converted_base(smol_home):
    [converted] = [p for p in (smol_home / "models").iterdir() if not p.name.startswith("_")]
    marker = json.loads((converted / "converted.json").read_text())
    assert converted.name == f"smollm2-135m-instruct-{marker['sha256'][:16]}"
    checkpoints = _checkpoints(smol_home)
    reference, reference_training = checkpoints["reference_policy"]
    dpo, dpo_training = checkpoints["dpo_checkpoint"]
    for path in (reference, dpo):
        assert (path / "adapter_model.safetensors").is_file() and not (path / "model.safetensors").exists()
        assert "<|im_start|>" in (path / "chat_template.jinja").read_text()
    assert reference_training["base"]["gguf_sha256"] == marker["sha256"]
    assert reference_training["lora_r"] == 8 and dpo_training["lora_r"] == 8
    assert json.loads((reference / "parent.json").read_text())["kind"] == "packaged"
    dpo_parent = json.loads((dpo / "parent.json").read_text())
    assert (dpo / dpo_parent["path"]).resolve() == reference.resolve()
    assert dpo_training["reference_version"] == reference.name


def test_scored_tokens_carry_the_chat_template_role_markers(smol_home):
    """Scoring (as eval and DPO see it) equals a forward pass over the chat template's own rendering of the
    conversation: the prompt reached the model through the template, role markers included."""
    import torch

    from real_assets.core.device import pick_device
    from real_assets.core.lengths import fit
    from real_assets.core.models import load_policy
    from real_assets.core.scoring import score_pairs

    reference, _ = _checkpoints(smol_home)["reference_policy"]
    device = pick_device("cpu")
    model, tokenizer = load_policy(reference, device)
    prompt, answer = "How do I make a cup of tea?", "Boil water and steep the tea for three minutes."
    fitted = fit(tokenizer, prompt, [answer], 128, 4)
    assert tokenizer.decode(fitted.prompt_ids).count("<|im_start|>user\n") == 1
    scores = score_pairs(model, tokenizer, [prompt], [answer], [answer], device, 128)
    messages = [{"role": "user", "content": prompt}]
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": answer}], tokenize=False
    ).rstrip()
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids and "<|im_start|>assistant" in prompt_text
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([full_ids])).logits[0, :-1].float()
    logps = torch.log_softmax(logits, -1).gather(-1, torch.tensor(full_ids[1:])[:, None]).squeeze(-1)
    expected = float(logps[len(prompt_ids) - 1 :].sum())
    assert scores.logps[0, 0] == pytest.approx(expected, abs=1e-3)


def test_eval_pairs_each_dpo_adapter_with_its_own_reference(smol_home, tmp_path):
    from real_assets.core.device import pick_device
    from real_assets.core.models import ModelError, load_policy_and_reference

    checkpoints = _checkpoints(smol_home)
    reference, _ = checkpoints["reference_policy"]
    dpo, training = checkpoints["dpo_checkpoint"]
    with duckdb.connect(str(smol_home / "warehouse.duckdb"), read_only=True) as con:
        [(reference_version, eval_pairs, accuracy)] = con.execute(
            "select reference_version, eval_pairs, preference_accuracy from eval.eval_scores"
        ).fetchall()
    assert reference_version == training["reference_version"] == reference.name
    assert eval_pairs >= 10 and 0.0 <= accuracy <= 1.0
    other = tmp_path / "0000000000000000"
    shutil.copytree(reference, other)
    with pytest.raises(ModelError, match="not from the reference"):
        load_policy_and_reference(dpo, other, pick_device("cpu"))


def test_audit_passes_on_adapter_checkpoints_and_catches_a_changed_base(smol_home, capsys):
    assert cli.main(["audit", "--home", str(smol_home)]) == 0
    out = capsys.readouterr().out
    assert "audit passed" in out
    assert "warning  budget_sweep: never materialized in this home" in out  # the preset skips it
    [converted] = [p for p in (smol_home / "models").iterdir() if not p.name.startswith("_")]
    config = converted / "config.json"
    original = config.read_text()
    try:
        config.write_text(original.replace("}", ', "tampered": true}', 1))
        assert cli.main(["audit", "--home", str(smol_home)]) != 0
        assert "PROBLEM  reference_policy" in capsys.readouterr().out
    finally:
        config.write_text(original)
