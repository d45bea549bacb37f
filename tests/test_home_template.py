"""A new home starts from a prepared template's migrated Dagster and MLflow stores
(`REAL_ASSETS_HOME_TEMPLATE`), never from one that is not a prepared home, and never under a service
instance config."""

import dagster as dg
import pytest
from conftest import restored_environment
from mlflow import MlflowClient

from real_assets.homes import HOME_TEMPLATE_ENV, prepare_home

pytestmark = pytest.mark.slow

MARKER = "made-in-the-template"


@pytest.fixture
def template(tmp_path, monkeypatch):
    """A prepared home with an MLflow experiment and a Dagster run that only a copy of it can have."""
    monkeypatch.delenv(HOME_TEMPLATE_ENV, raising=False)  # this test makes its own template
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = prepare_home(str(tmp_path / "template")).home
    MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}").create_experiment(MARKER)
    with dg.DagsterInstance.from_config(str(root / "dagster")) as instance:
        instance.add_run(dg.DagsterRun(job_name=MARKER, run_id=MARKER))
    return root


def _marked(home) -> tuple[bool, bool]:
    """Whether the home's MLflow store and Dagster storage came from the template."""
    experiment = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}").get_experiment_by_name(MARKER)
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        return experiment is not None, instance.get_run_by_id(MARKER) is not None


def test_a_new_home_copies_the_templates_stores_and_a_home_that_has_them_keeps_its_own(
    template, tmp_path, monkeypatch
):
    assert _marked(prepare_home(str(tmp_path / "plain")).home) == (False, False)
    monkeypatch.setenv(HOME_TEMPLATE_ENV, str(template))
    assert _marked(prepare_home(str(tmp_path / "copied")).home) == (True, True)
    assert _marked(prepare_home(str(tmp_path / "plain")).home) == (False, False)  # already had stores


def test_a_service_instance_config_and_a_tracking_server_take_nothing_from_the_template(
    template, tmp_path, monkeypatch
):
    monkeypatch.setenv(HOME_TEMPLATE_ENV, str(template))
    config = tmp_path / "service.yaml"
    config.write_text("telemetry:\n  enabled: false\n")
    home = prepare_home(str(tmp_path / "service"), instance_config=str(config)).home
    assert not (home / "dagster" / "history" / "runs.db").exists() or not _marked(home)[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    home = prepare_home(str(tmp_path / "tracked-elsewhere")).home
    assert not (home / "mlflow.db").exists()


def test_a_template_that_is_not_a_prepared_home_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv(HOME_TEMPLATE_ENV, str(tmp_path / "nothing"))
    with restored_environment(), pytest.raises(FileNotFoundError, match="is not a prepared home"):
        prepare_home(str(tmp_path / "home"))
