"""The outside world: files, MLflow, Great Expectations, Evidently, delivery, SQL, the local LM."""
