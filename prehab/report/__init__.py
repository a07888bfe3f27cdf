"""Reporting: read every evaluated model of the study grid into one long table (collect), then
write per-study tables (tables), figures (figures) and an MLflow import (mlflow_log).

`prehab report` and `prehab mlflow-log` (commands) are the entry points; pandas, matplotlib and
mlflow are imported inside the functions so `prehab --help` stays fast."""
