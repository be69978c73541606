"""One module per engine (DuckDB, PostgreSQL, Spark): connections, credentials and what a target
is.
"""
