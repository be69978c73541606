"""The demo data: the generator, its faults, and loading raw data into server and Spark targets."""
