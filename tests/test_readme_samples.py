"""README's samples (the results tables and the audit samples) have the form that
scripts/readme_samples.py gives a real home, the shared demo's: the same lines, steps, partitions, columns
and verdicts, with only ids, times, versions and numbers free. A sample the code can no longer produce fails
here; `python scripts/readme_samples.py --home <home> --write README.md` regenerates them after a run."""

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("readme_samples", ROOT / "scripts" / "readme_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_samples_have_the_form_the_code_gives_a_real_home(demo_home):
    script = _script()
    readme = script.readme_samples("\n".join((ROOT / name).read_text() for name in script.SAMPLE_FILES))
    produced = script.render(demo_home)
    for name in script.SAMPLES:
        assert script.sample_form(readme[name]) == script.sample_form(produced[name]), name
    # the forms keep what matters: the partition keys of an older code (the strategy alone) do not pass
    old = produced["audit-clean"].replace("[0|easy]", "[easy]")
    assert script.sample_form(old) != script.sample_form(produced["audit-clean"])


def test_sample_form_leaves_out_only_what_differs_between_runs():
    script = _script()
    run = "raw_responses  af595179  2026-11-26 01:28:45  34a947f0be06  8b1a5cc0f9da0369  249  ok"
    other = "raw_responses      0494c0d7  2026-12-04 10:00:00  9a3e8ed1d206  50f5d8bfca585ac5  1,676  ok"
    assert script.sample_form(run) == script.sample_form(other)
    assert script.sample_form(run) != script.sample_form(run.replace("34a947f0be06", "1"))
    assert script.sample_form(run) != script.sample_form(run.replace(" ok", " FAIL"))
    cell = "| easy | 0.880 [0.720, 1.040] | +0.299 [+0.123, +0.501] p<0.001 |"
    other_run = "| easy | 0.9 [0.8, 1] | -0.1 [-0.2, +0.1] p=0.250 |"
    no_interval = "| easy | 0.880 | +0.299 [+0.123, +0.501] p<0.001 |"
    assert script.sample_form(cell) == script.sample_form(other_run)
    assert script.sample_form(cell) != script.sample_form(no_interval)
    readme = "a\n<!-- sample:results -->\nold\n<!-- /sample:results -->\nb"
    with pytest.raises(ValueError, match="budget-sweep"):
        script.readme_samples(readme)
    assert script.write_samples(readme, {"results": "new"}) == readme.replace("old", "new")
