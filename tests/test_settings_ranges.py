"""Step settings out of range are refused before any step runs, naming the field, the value and the range;
the same check runs when a step starts from a run launched elsewhere (the Dagster UI)."""

import dagster as dg
import pytest
from conftest import run_cli

from real_assets.definitions import defs
from real_assets.defs.common import SETTING_RANGES, SettingOutOfRange, _config_class, check_step_config

OUT_OF_RANGE = [
    # (asset, config, the text the error must hold: field = value and the allowed range)
    ("dpo_checkpoint", {"beta": -1}, "beta = -1: must be > 0"),
    ("dpo_checkpoint", {"beta": 0}, "beta = 0: must be > 0"),
    ("dpo_checkpoint", {"learning_rate": 0}, "learning_rate = 0: must be > 0"),
    ("reference_policy", {"learning_rate": -1e-3}, "learning_rate = -0.001: must be > 0"),
    ("reference_policy", {"epochs": 0}, "epochs = 0: must be > 0"),
    ("reference_policy", {"seed": -1}, "seed = -1: must be >= 0"),
    ("dpo_checkpoint", {"epochs": -2}, "epochs = -2: must be > 0"),
    ("dpo_checkpoint", {"max_length": 10}, "max_length = 10: must be >= min_response_tokens + 8"),
    ("dpo_checkpoint", {"min_response_tokens": 0}, "min_response_tokens = 0: must be >= 1"),
    ("selected_pairs", {"keep_fraction": 0}, "keep_fraction = 0: must be in (0, 1]"),
    ("selected_pairs", {"keep_fraction": 1.5}, "keep_fraction = 1.5: must be in (0, 1]"),
    ("dpo_checkpoint", {"lora_r": -1}, "lora_r = -1: must be >= 0"),
    ("reference_policy", {"lora_alpha": 0}, "lora_alpha = 0: must be > 0"),
    ("eval_scores", {"samples_per_prompt": 0}, "samples_per_prompt = 0: must be >= 1"),
    ("raw_responses", {"limit": 0}, "limit = 0: must be >= 1"),
    ("raw_responses", {"n_prompts": 0}, "n_prompts = 0: must be >= 1"),
]


def _assets_def(name: str) -> dg.AssetsDefinition:
    return defs.get_assets_def(dg.AssetKey.from_user_string(name))


@pytest.mark.parametrize(("asset", "config", "expected"), OUT_OF_RANGE)
def test_a_setting_out_of_range_names_field_value_and_range(asset, config, expected):
    with pytest.raises(SettingOutOfRange) as raised:
        check_step_config(_assets_def(asset), config)
    assert str(raised.value).startswith(f"{asset}: ")
    assert expected in str(raised.value)


def test_settings_in_range_and_defaults_pass():
    for asset in ("dpo_checkpoint", "reference_policy", "selected_pairs", "budget_sweep", "eval_scores"):
        check_step_config(_assets_def(asset), {})
    check_step_config(_assets_def("dpo_checkpoint"), {"beta": 0.01, "max_length": 12, "learning_rate": 1})
    check_step_config(_assets_def("selected_pairs"), {"keep_fraction": 1.0})
    check_step_config(_assets_def("raw_responses"), {"limit": 1})


def test_every_ranged_field_is_a_field_of_some_step():
    """A range for a field no step has is a typo that checks nothing."""
    fields = set()
    for assets_def in defs.assets:
        config_class = _config_class(assets_def)
        fields |= set(config_class.model_fields) if config_class else set()
    assert set(SETTING_RANGES) <= fields, set(SETTING_RANGES) - fields


def test_a_step_launched_with_a_setting_out_of_range_fails_before_its_body(home):
    """What a run from the Dagster UI's launchpad gets: the step fails as it builds its config."""
    from real_assets.demo import materialize

    result = materialize(
        ["selected_pairs"],
        partition="0|easy",
        ops={"selected_pairs": {"keep_fraction": 0}},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.step_failure_data.error
    text = ""
    while error is not None:
        text += error.message
        error = error.cause
    assert "keep_fraction = 0.0: must be in (0, 1]" in text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--config", 'dpo_checkpoint={"beta": -1}'], "dpo_checkpoint: beta = -1: must be > 0"),
        (["--limit", "0"], "raw_responses: limit = 0: must be >= 1"),
        (["--dpo-epochs", "0"], "dpo_checkpoint: epochs = 0.0: must be > 0"),
    ],
)
def test_the_demo_refuses_a_setting_out_of_range_before_any_step(
    tmp_path, home_template, capsys, args, expected
):
    home = tmp_path / "home"
    code, _, err = run_cli(capsys, ["demo", "--home", str(home), "--n-prompts", "12", *args])
    assert code == 2, err
    assert expected in err and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert instance.get_runs() == []  # no step ran
