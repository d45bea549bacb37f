"""Pure logic of REAL: no Dagster, no MLflow. Every module here is tested directly."""
