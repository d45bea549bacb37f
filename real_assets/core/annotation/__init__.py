"""The annotation loop: prompts without responses, candidates sampled from a policy, pairs chosen before
labels exist, tasks for annotators (Label Studio or its file format), annotations read back, their agreement
and noise measured. Pure logic: no Dagster, no MLflow."""
