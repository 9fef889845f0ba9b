"""The detector end to end: `detector train` into a real MLflow registry (temporary SQLite store), then
`check` estimating the synthetic share with it; declared provenance; the batch and accumulated human floors.

Text: the shipped labelled set (Python documentation and Austen paragraphs vs SmolLM2-135M output).
"""

import json
import random
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.cli import main
from monitors.demo.corpus import detector_set
from monitors.core.detector import data_hash
from tests.conftest import write_jsonl

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pools():
    rows = detector_set()
    rng = random.Random(3)
    rng.shuffle(rows)
    human = [r["text"] for r in rows if r["label"] == "human"]
    machine = [r["text"] for r in rows if r["generator"] == "smollm2-t0.8"]
    return {"train_h": human[:400], "train_s": machine[:400], "ref": human[400:1000],
            "test_h": human[1000:], "test_s": machine[400:],
            "unseen": [r["text"] for r in rows if r["generator"] == "smollm2-t1.3"]}


def _batch(path: Path, human: list[str], machine: list[str], declare: float = 0.0, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = [{"id": f"h{seed}-{i}", "text": t, "created_at": "2021-01-01", "label": "human"} for i, t in enumerate(human)]
    rows += [{"id": f"s{seed}-{i}", "text": t, "created_at": "2021-01-01", "label": "synthetic"} for i, t in enumerate(machine)]
    for row in rows:
        label = row.pop("label")
        if rng.random() < declare:
            row["provenance"] = label
    rng.shuffle(rows)
    return write_jsonl(path, rows)


def _check(path: Path, capsys) -> tuple[int, dict]:
    code = main(["check", "--input", str(path), "--dataset", "mixed", "--json"])
    out = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(out) == 1, out
    return code, json.loads(out[0])


def test_train_register_and_estimate_with_floors(isolated, pools, capsys, monkeypatch):
    human = write_jsonl(isolated / "h.jsonl", [{"id": f"th{i}", "text": t} for i, t in enumerate(pools["train_h"])]
                        + ['{"id": "broken", "text": "cut in the mid'])
    synthetic = write_jsonl(isolated / "s.jsonl", [{"id": f"ts{i}", "text": t} for i, t in enumerate(pools["train_s"])])
    assert main(["detector", "train", "--human", str(human), "--synthetic", str(synthetic), "--alias", "production"]) == 0
    out = capsys.readouterr().out
    assert "registered detector collapse-detector version 1 as @production" in out
    assert "held-out ROC AUC" in out and "1 human record(s) quarantined" in out

    client = MlflowClient(f"sqlite:///{isolated}/.collapse-monitor/mlflow.db")
    mv = client.get_model_version_by_alias("collapse-detector", "production")
    assert str(mv.version) == "1" and float(mv.tags["collapse.roc_auc"]) > 0.95
    assert mv.tags["collapse.quantifier"] in ("acc", "pacc", "em")
    assert mv.tags["collapse.data.human_sha256"] == data_hash(pools["train_h"])
    assert mv.tags["collapse.data.synthetic_sha256"] == data_hash(pools["train_s"])
    mlmodel = Path(client.download_artifacts(mv.run_id, "detector/MLmodel", str(isolated))).read_text()
    assert "serialization_format: skops" in mlmodel  # loading does not unpickle arbitrary code
    val = json.loads(Path(client.download_artifacts(mv.run_id, "validation/scores.json", str(isolated))).read_text())
    assert len(val["scores"]) == len(val["labels"]) == 320
    quarantine = Path(client.download_artifacts(mv.run_id, "quarantine/human/quarantine.jsonl", str(isolated))).read_text()
    assert '"reason": "invalid JSON' in quarantine or "unparseable" in quarantine or "JSON" in quarantine

    ref = write_jsonl(isolated / "ref.jsonl", [{"id": f"r{i}", "text": t, "created_at": "2020-01-01"}
                                               for i, t in enumerate(pools["ref"])])
    assert main(["reference", "build", "--input", str(ref), "--dataset", "mixed"]) == 0
    capsys.readouterr()

    # 40 % machine text, nothing declared: the default detector URI is used and says so.
    code, r = _check(_batch(isolated / "b1.jsonl", pools["test_h"][:180], pools["test_s"][:120], seed=1), capsys)
    s = r["synthetic_share"]
    assert s["detector"] == "models:/collapse-detector@production (version 1)"
    assert abs(s["estimate"] - 0.4) < 0.08 and s["low"] <= 0.4 <= s["high"] and s["high"] - s["low"] < 0.25
    assert s["method"] in ("acc", "pacc", "em") and not s["out_of_range"]
    ind = r["indicators"]
    assert ind["human.share"] == pytest.approx(1 - s["estimate"])
    assert ind["corpus.human_share"] == pytest.approx(ind["human.share"]) and ind["corpus.batches"] == 1
    assert "human_share_below_floor" not in {a["rule"] for a in r["alerts"]}

    # 90 % machine text: the batch is below the floor (warning); the corpus (0.6 + 0.1) / 2 is not yet.
    code, r = _check(_batch(isolated / "b2.jsonl", pools["test_h"][180:210], pools["test_s"][120:390], seed=2), capsys)
    rules = {a["rule"]: a["severity"] for a in r["alerts"]}
    assert rules.get("human_share_below_floor") == "warning" and "corpus_human_below_floor" not in rules
    assert 0.3 < r["indicators"]["corpus.human_share"] < 0.45 and r["indicators"]["corpus.batches"] == 2

    # Half the records declare their provenance: they count exactly, the detector estimates the rest.
    code, r = _check(_batch(isolated / "b3.jsonl", pools["test_h"][210:240], pools["test_s"][390:960], declare=0.5,
                            seed=3), capsys)
    s = r["synthetic_share"]
    assert s["method"].startswith("declared+") and "declare their provenance" in s["note"]
    truth = 570 / 600
    # one draw of a 95 % interval: allow it to miss by a hair, not by a mile
    assert abs(s["estimate"] - truth) < 0.03 and s["low"] - 0.01 <= truth <= s["high"] + 0.01
    # The accumulated corpus is now under the floor: critical, exit 3 (accumulate, don't replace).
    rules = {a["rule"]: a["severity"] for a in r["alerts"]}
    assert rules.get("corpus_human_below_floor") == "critical" and code == 3
    assert r["indicators"]["corpus.human_share"] < 0.3 and r["indicators"]["corpus.batches"] == 3

    # Another version of the detector chosen through the environment.
    monkeypatch.setenv("COLLAPSE_MONITOR_DETECTOR__MODEL_URI", "models:/collapse-detector/1")
    every = _batch(isolated / "b4.jsonl", pools["test_h"][240:300], [], declare=1.0, seed=4)
    code, r = _check(every, capsys)
    s = r["synthetic_share"]
    assert (s["estimate"], s["low"], s["high"], s["method"]) == (0.0, 0.0, 0.0, "declared")
    assert s["detector"] == "models:/collapse-detector/1 (version 1)"


def test_machine_text_from_an_unseen_decoding_setting_is_not_passed_off_as_validated(pools):
    """SmolLM2 sampled at temperature 1.3, which the detector never saw (it was trained at 0.8): its scores
    sit between the classes, so the estimate is biased low. It must say it is out of range (interval [0, 1]),
    not claim a tight interval around a wrong number; in-range text of the same size stays in range."""
    from monitors.core.detector import train_detector
    from monitors.core.quantify import estimate_share

    det = train_detector(pools["train_h"], pools["train_s"], seed=0)
    unseen = estimate_share(det.scores(pools["unseen"][:300]), det.validation, method=det.method, replicates=500)
    assert unseen.out_of_range and (unseen.low, unseen.high) == (0.0, 1.0), unseen
    seen = estimate_share(det.scores(pools["test_s"][:300]), det.validation, method=det.method, replicates=500)
    assert not seen.out_of_range and seen.low <= 1.0 <= seen.high + 0.01 and seen.estimate > 0.95, seen
