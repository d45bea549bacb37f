"""The code location: the assets and checks of every domain module, the SQL models built on the tables
they declare, the automation, and the resources. Nothing here lists assets by name."""

import os

import dagster as dg

from real_assets.core.hashing import code_digest
from real_assets.defs import (
    annotation,
    annotation_sensor,
    automation,
    budget,
    candidates,
    evaluation,
    features,
    inbox,
    ingest,
    selection,
    training,
)
from real_assets.defs.sql_assets import sql_definitions
from real_assets.resources import Compute, Home, LabelStudio, Tracking, Warehouse
from real_assets.settings import ENGINE_ENV, MODEL_BACKEND_ENV, Locations

DOMAINS = [ingest, features, selection, training, evaluation, budget, candidates, annotation]
PACKAGE = "real_assets"


def with_code_versions(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """Each asset without a code version gets the digest of the code it runs (`code_digest` of its
    function), so Dagster marks it stale when its logic changes."""

    def versioned(asset: dg.AssetsDefinition) -> dg.AssetsDefinition:
        if all(asset.code_versions_by_key.values()):
            return asset
        version = code_digest(asset.op.compute_fn.decorated_fn, PACKAGE)[:12]
        [out] = dg.map_asset_specs(lambda spec: spec.replace_attributes(code_version=version), [asset])
        return out

    return [versioned(a) for a in assets]


def grouped_assets(module) -> list[dg.AssetsDefinition]:
    """The assets a domain module defines (not those it imports), in the asset group named after it
    (`defs/training.py` -> `training`)."""
    group = module.__name__.rsplit(".", 1)[-1]
    own = [
        asset
        for asset in dg.load_assets_from_modules([module])
        if asset.op.compute_fn.decorated_fn.__module__ == module.__name__
    ]
    return list(dg.map_asset_specs(lambda spec: spec.replace_attributes(group_name=group), own))


def resources_for(locations: Locations, model_backend: str | None = None) -> dict:
    """The resources of one home: its folder, warehouse and MLflow store (`Locations`), the engine from
    REAL_ASSETS_ENGINE (`local` unless set; `ray` joins the cluster at RAY_ADDRESS), the model backend given,
    else from REAL_ASSETS_MODEL_BACKEND (`torch` unless set; `fake` for tests of the orchestration)."""
    compute = Compute(
        engine=os.environ.get(ENGINE_ENV) or "local",
        model_backend=model_backend or os.environ.get(MODEL_BACKEND_ENV) or "torch",
    )
    return {
        "home": Home(path=str(locations.home), inbox_path=str(locations.inbox)),
        "warehouse": Warehouse(path=locations.warehouse, data_path=locations.warehouse_data),
        "tracking": Tracking(
            tracking_uri=locations.tracking_uri, artifact_root=locations.mlflow_artifacts or ""
        ),
        "compute": compute,
        "label_studio": LabelStudio(),
    }


domain_assets = with_code_versions([asset for module in DOMAINS for asset in grouped_assets(module)])

CODE_LOCATION = (
    dg.Definitions(assets=domain_assets, asset_checks=dg.load_asset_checks_from_modules(DOMAINS)),
    sql_definitions(domain_assets),
    dg.Definitions(
        # Every step holds a one-slot pool (warehouse or gpu), so a run's steps barely overlap; in a process
        # each (the multiprocess executor) every step, asset check included, loaded the code location again.
        executor=dg.in_process_executor,
        jobs=[*automation.jobs, *annotation_sensor.jobs],
        schedules=automation.schedules,
        sensors=[*automation.sensors, *inbox.sensors, *annotation_sensor.sensors],
    ),
)
"""Everything but the resources (a tuple: a module holds one `Definitions`, `defs`)."""


def definitions(locations: Locations | None = None, model_backend: str | None = None) -> dg.Definitions:
    """The code location with the resources of a home (`resources_for`); by default the home the
    command line and environment name, resolved once (`Locations.resolve`)."""
    resources = resources_for(locations or Locations.resolve(), model_backend)
    return dg.Definitions.merge(*CODE_LOCATION, dg.Definitions(resources=resources))


defs = definitions()
