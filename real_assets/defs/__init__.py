"""Dagster definitions, one module per domain: ingest, features, selection, training, evaluation."""
