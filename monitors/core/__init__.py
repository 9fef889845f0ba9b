"""Pure computations: no I/O, no Prefect, no MLflow (tests/unit/test_layering.py reads this folder)."""
