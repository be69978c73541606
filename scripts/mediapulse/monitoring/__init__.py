"""Run history, anomalies, schema changes of the sources, alerts, notifications and the morning
report.
"""
