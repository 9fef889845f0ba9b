"""The n-gram generators of the memorization probe as an MLflow model from code: MLflow runs this file to
build the model (its state, the tokenised training text, comes from the ``generator`` JSON artifact in
``load_context``), so nothing is cloudpickled."""

import mlflow.models

from monitors.demo.probe_models import NgramTextModel

mlflow.models.set_model(NgramTextModel())
