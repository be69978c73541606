"""What every job needs before dbt runs."""
