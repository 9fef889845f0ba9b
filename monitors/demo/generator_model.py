"""The demo's bigram text generator as an MLflow model from code: MLflow runs this file to build the model
(its state comes from the ``generator`` JSON artifact in ``load_context``), so nothing is cloudpickled."""

import mlflow.models

from monitors.demo.probe_models import BigramTextModel

mlflow.models.set_model(BigramTextModel())
