"""Running dbt: the runner and its child process, dbt's artifacts, packages, and the environment
dbt gets.
"""
