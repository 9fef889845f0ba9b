"""Small models registered in MLflow for the demo and the tests: a scikit-learn text classifier, the
bigram text generator and the memorization probe's n-gram generators (:mod:`monitors.demo.ngram`), each
wrapped as a pyfunc that follows the generator contract of :mod:`monitors.adapters.models`.

Registration goes through MLflow's fluent API (the only way it offers to log a model): the caller sets the
tracking URI for the process first, as the CLI does.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from monitors.adapters.models import KIND_TAG
from monitors.adapters.registry import register_version
from monitors.demo.ngram import NgramGenerator
from monitors.demo.simulate import BigramGenerator
from monitors.core.schema import Tag


class _TextModel(mlflow.pyfunc.PythonModel):
    """The generator contract over a generator with ``from_dict``, ``loglik`` and ``continue_text``: ``task=loglik``
    gives log-likelihood and token count; ``task=generate`` a continuation of each prompt (:meth:`_continue`)."""

    generator_class: type = BigramGenerator

    def load_context(self, context):
        with open(context.artifacts["generator"], encoding="utf-8") as fh:
            self.generator = self.generator_class.from_dict(json.load(fh))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        params = params or {}
        texts = [str(t) for t in model_input["text"]]
        if params.get("task", "generate") == "loglik":
            scored = [self.generator.loglik(t) for t in texts]
            return pd.DataFrame({"loglik": [s[0] for s in scored], "tokens": [s[1] for s in scored]})
        rng = random.Random(int(params.get("seed", 0)))
        return [self._continue(t, rng, params) for t in texts]


class BigramTextModel(_TextModel):
    """``task=generate``: a continuation of each prompt; ``task=loglik``: log-likelihood and token count.

    Logged as code (:mod:`monitors.demo.generator_model`) with the generator's state as a JSON artifact, so
    neither logging nor loading it pickles anything.
    """

    def __init__(self, generator: BigramGenerator | None = None, max_words: int = 40):
        self.generator = generator
        self.max_words = max_words

    def _continue(self, text: str, rng: random.Random, params: dict) -> str:
        return self.generator.continue_text(text, self.max_words, rng)


class NgramTextModel(_TextModel):
    """An :class:`NgramGenerator` under the generator contract: ``task=generate`` with ``seed``, ``greedy``
    and ``max_words``; ``task=loglik``. Logged as code (:mod:`monitors.demo.ngram_model`), state as JSON."""

    generator_class = NgramGenerator

    def __init__(self, generator: NgramGenerator | None = None):
        self.generator = generator

    def _continue(self, text: str, rng: random.Random, params: dict) -> str:
        greedy = str(params.get("greedy", False)).lower() in ("1", "true")
        return self.generator.continue_text(text, int(params.get("max_words", 40)), rng, greedy=greedy)


def _register(info, name: str, tags: dict[str, str], alias: str | None, client) -> str:
    return register_version(client, info, name, tags, alias)


def lineage_tags(kind: str, teacher: str | None, synthetic_fraction: float) -> dict[str, str]:
    tags = {KIND_TAG: kind, Tag.SYNTHETIC_FRACTION: f"{synthetic_fraction:.4g}"}
    if teacher:
        tags[Tag.TEACHER] = teacher
    return tags


def register_classifier(client, model, *, experiment_id: str, name: str, alias: str | None = None,
                        tags: dict[str, str] | None = None, run_name: str | None = None) -> str:
    """Log a fitted scikit-learn text classifier (skops format) and register it; returns the version."""
    import mlflow.sklearn
    import skops.io

    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name or f"train {name}",
                          tags={Tag.KIND: "model"}):
        info = mlflow.sklearn.log_model(
            model, name="model", serialization_format="skops",
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
            input_example=np.array(["An example text."], dtype=object), pip_requirements=["scikit-learn", "skops"])
    return _register(info, name, tags or {}, alias, client)


def _register_generator(client, state: dict, model_file: str, params: dict, *, experiment_id: str, name: str,
                        alias: str | None, tags: dict[str, str], run_name: str | None) -> str:
    """Log a generator as a pyfunc from code (``model_file``; its state a JSON artifact, its signature declaring
    ``params``) and register it; returns the version."""
    import tempfile

    from mlflow.models import infer_signature

    example = pd.DataFrame({"text": ["a prompt"]})
    signature = infer_signature(example, ["a continuation"], params=params)
    with tempfile.TemporaryDirectory() as tmp:
        state_file = Path(tmp) / "generator.json"
        state_file.write_text(json.dumps(state), encoding="utf-8")
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name or f"train {name}",
                              tags={Tag.KIND: "model"}):
            info = mlflow.pyfunc.log_model(name="model", python_model=model_file,
                                           artifacts={"generator": str(state_file)}, signature=signature,
                                           input_example=example, pip_requirements=["numpy", "pandas"])
    return _register(info, name, tags, alias, client)


def register_text_generator(client, generator: BigramGenerator, *, experiment_id: str, name: str,
                            alias: str | None = None, tags: dict[str, str] | None = None,
                            run_name: str | None = None) -> str:
    """Log the bigram generator as a pyfunc (with a signature that declares its ``task`` and ``seed``
    parameters) and register it; returns the version."""
    from monitors.demo import generator_model as demo_generator_model

    return _register_generator(client, generator.to_dict(), demo_generator_model.__file__, {"task": "generate", "seed": 0},
                               experiment_id=experiment_id, name=name, alias=alias, tags=tags or {}, run_name=run_name)


def register_ngram_generator(client, generator: NgramGenerator, *, experiment_id: str, name: str,
                             alias: str | None = None, tags: dict[str, str] | None = None,
                             run_name: str | None = None) -> str:
    """Log an n-gram generator as a pyfunc from code (state: a JSON artifact; signature: ``task``, ``seed``,
    ``greedy``, ``max_words``) and register it; returns the version."""
    from monitors.demo import ngram_model

    return _register_generator(client, generator.to_dict(), ngram_model.__file__,
                               {"task": "generate", "seed": 0, "greedy": False, "max_words": 40},
                               experiment_id=experiment_id, name=name, alias=alias,
                               tags={KIND_TAG: "generator", **(tags or {})}, run_name=run_name)
