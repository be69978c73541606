"""Orchestrators that run MediaPulse's releases one task per model: Airflow with
astronomer-cosmos (``airflow_dags``) and Dagster with dagster-dbt (``dagster_defs``). Both
run the release's steps (`mediapulse release prepare|build|publish|discard`) around dbt, so a
model that fails leaves production as it was, and a retry resumes the staged release."""
