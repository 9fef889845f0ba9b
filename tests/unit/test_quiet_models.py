"""Registering the demo's models prints nothing and pickles nothing (issue 20, item 8).

MLflow's ``register_model`` prints "Successfully registered model"/"Created version" for every version, and a
pyfunc given as a Python object is cloudpickled (with a security warning), contradicting the README's
"skops, no unpickling".
"""

from __future__ import annotations

import logging
import warnings
import pandas as pd


def test_demo_models_register_quietly_without_pickles(tmp_path, capfd, caplog, monkeypatch):
    import mlflow
    from mlflow import MlflowClient
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from monitors.demo import probe_models as demo_models
    from monitors.demo.simulate import BigramGenerator

    # the variable, undone after the test (mlflow.set_tracking_uri would outlive it and redirect later tests)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    exp = client.create_experiment("models", artifact_location=(tmp_path / "art").as_uri())
    texts = ["The cat sat on the mat today and slept.", "A dog ran in the park and barked at birds."] * 3
    gen = BigramGenerator().fit(texts)
    clf = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, [0, 1] * 3)
    capfd.readouterr()
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v1 = demo_models.register_text_generator(client, gen, experiment_id=exp, name="gen", alias="production")
        v2 = demo_models.register_text_generator(client, gen, experiment_id=exp, name="gen", alias="production")
        c1 = demo_models.register_classifier(client, clf, experiment_id=exp, name="clf", alias="production")
    out, err = capfd.readouterr()
    said = out + err + caplog.text
    assert (v1, v2, c1) == ("1", "2", "1")
    assert "Created version" not in said and "Successfully registered" not in said, said
    assert "CloudPickle" not in said, said
    assert not [w for w in caught if "input example" in str(w.message)], [str(w.message) for w in caught]
    assert not [p for p in (tmp_path / "art").rglob("*.pkl")], "a model was pickled"

    model = mlflow.pyfunc.load_model("models:/gen@production")
    scored = model.predict(pd.DataFrame({"text": ["The cat sat."]}), params={"task": "loglik"})
    assert scored["loglik"].iloc[0] == gen.loglik("The cat sat.")[0]
    made = model.predict(pd.DataFrame({"text": ["The cat"]}), params={"seed": 3})
    assert made == [gen.continue_text("The cat", 40, __import__("random").Random(3))]
