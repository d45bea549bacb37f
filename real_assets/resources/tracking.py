"""Tracking: one MLflow run per materialization, started, tagged and ended in one place, addressed by its
run id through an `MlflowClient` (no process-wide active run)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from real_assets import interrupts


class StepRun:
    """The MLflow run of one materialization: what an asset may log (its own params, metrics, artifacts)."""

    def __init__(self, client, run_id: str, experiment_id: str):
        self.client = client
        """An `MlflowClient` on the tracking store: every call names this run, none uses an active run."""
        self.run_id = run_id
        self.experiment_id = experiment_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, _param(v)) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        clean = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if isinstance(v, int | float) and v == v
        ]
        if clean:
            self.client.log_batch(self.run_id, metrics=clean)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_table(self, frame, artifact_file: str) -> None:
        self.client.log_table(self.run_id, frame, artifact_file)

    def log_dataset(self, frame, name: str, source: str, context: str = "training") -> str:
        """Log a DataFrame as an MLflow dataset input; returns its digest."""
        import mlflow
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        dataset = mlflow.data.from_pandas(frame, source=source, name=name)
        entry = DatasetInput(dataset._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)])
        self.client.log_inputs(self.run_id, datasets=[entry])
        return dataset.digest

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def register_model(self, name: str, source: Path, tags: dict[str, str]) -> str:
        """Register a checkpoint folder as a new version of a registered model; returns the version."""
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):
            self.client.create_registered_model(name)
        version = self.client.create_model_version(
            name, source=source.as_uri(), run_id=self.run_id, tags=tags
        )
        return str(version.version)

    @property
    def url_path(self) -> str:
        return f"#/experiments/{self.experiment_id}/runs/{self.run_id}"


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."


_REACHABLE: set[str] = set()


class TrackingServerUnreachable(RuntimeError):
    """The MLflow tracking server does not answer."""


def check_tracking_server(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with a message that says what to do, when an http(s) tracking server does not answer its
    health endpoint within `timeout_s` (MLflow itself retries for minutes). Also bounds MLflow's own
    retries for the rest of the process. Local stores (sqlite, file) need no check."""
    if not uri.startswith(("http://", "https://")) or uri in _REACHABLE:
        return
    import os
    import urllib.error
    import urllib.request

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(int(timeout_s) * 2, 10)))
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            pass
    except urllib.error.HTTPError:
        pass  # it answered: a server without /health (or behind a proxy) is still a server
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingServerUnreachable(
            f"MLflow tracking server {uri} did not answer within {timeout_s:g} s ({reason}). "
            "Start it, fix MLFLOW_TRACKING_URI, or unset it to track into <home>/mlflow.db."
        ) from None
    _REACHABLE.add(uri)


class Tracking(dg.ConfigurableResource):
    """MLflow: one run per materialization (and partition), started and tagged in one place."""

    tracking_uri: str
    """The MLflow store; the code location's is `Locations.tracking_uri` (`$MLFLOW_TRACKING_URI`, else a
    SQLite store under the home)."""
    artifact_root: str = ""
    """Where new experiments keep artifacts (`Locations.mlflow_artifacts`); empty: the server decides."""
    experiment: str = "real-assets"
    ui_url: str = "http://127.0.0.1:5000"
    """The MLflow UI, for links in the materialization metadata."""
    dagster_ui_url: str = "http://127.0.0.1:3000"
    """The Dagster UI, for links from the MLflow run back to the run and the asset."""

    connect_timeout_s: float = 5.0
    """How long to wait for a tracking server before failing with a clear message."""

    def uri(self) -> str:
        return self.tracking_uri

    def client(self):
        """An `MlflowClient` on this tracking store, after checking that a server answers."""
        from mlflow import MlflowClient

        check_tracking_server(self.uri(), self.connect_timeout_s)
        return MlflowClient(tracking_uri=self.uri(), registry_uri=self.uri())

    def _experiment_id(self, client) -> str:
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        return client.create_experiment(self.experiment, artifact_location=self.artifact_root or None)

    @contextlib.contextmanager
    def step(
        self, context: dg.AssetExecutionContext, upstream_versions: dict[str, str] | None = None
    ) -> Iterator[StepRun]:
        """Start the MLflow run of this materialization, tagged with its Dagster identity (code version
        included), and end it FINISHED, FAILED, or KILLED when a signal stopped the step; the asset sets
        the `dagster.data_version` tag once it knows its content. The run is addressed by its id through
        a client: nothing is process-wide."""
        client = self.client()
        experiment_id = self._experiment_id(client)
        asset_key = context.asset_key.to_user_string()
        code_version = context.assets_def.code_versions_by_key.get(context.asset_key)
        partition = context.partition_key if context.has_partition_key else ""
        tags = {
            "dagster.run_id": context.run_id,
            "dagster.asset_key": asset_key,
            "dagster.partition": partition,
            "dagster.code_version": code_version or "",
            "dagster.run_url": f"{self.dagster_ui_url}/runs/{context.run_id}",
            "dagster.asset_url": f"{self.dagster_ui_url}/assets/{'/'.join(context.asset_key.path)}",
            **{f"dagster.upstream.{k}": v for k, v in (upstream_versions or {}).items()},
        }
        run_name = f"{asset_key}[{partition}]" if partition else asset_key
        started = time.perf_counter()
        run = client.create_run(experiment_id, tags=tags, run_name=run_name)
        step = StepRun(client, run.info.run_id, experiment_id)
        try:
            yield step
        except BaseException as e:
            # Stopped by a signal, not by its own error: the interrupt itself, or another error it surfaced
            # as (DuckDB's InterruptException in a warehouse write) while the signal is pending.
            signalled = isinstance(e, KeyboardInterrupt | dg.DagsterExecutionInterruptedError)
            client.set_terminated(step.run_id, "KILLED" if signalled or interrupts.pending() else "FAILED")
            raise
        client.log_metric(step.run_id, "step/seconds", time.perf_counter() - started)
        client.set_terminated(step.run_id, "FINISHED")

    def run_url(self, step: StepRun) -> str:
        return f"{self.ui_url}/{step.url_path}"
