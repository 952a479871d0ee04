"""Links to the tools a team already runs beside Zoidberg: MLflow (an optional extra, imported only when asked)."""
