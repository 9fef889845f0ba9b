"""Deployments built from the settings (no server needed to build them) and `serve`'s refusal to run on the
ephemeral API."""

import pytest

from flows.cli import main
from flows.scheduled import deployments
from monitors.config import load_settings
from monitors.core.errors import UserError


def _settings(monkeypatch, **env):
    for k, v in env.items():
        monkeypatch.setenv(f"COLLAPSE_MONITOR_{k}", v)
    return load_settings(None)


def test_data_and_probe_deployments(isolated, monkeypatch):
    s = _settings(monkeypatch, SCHEDULES__LANDING="/data/in", SCHEDULES__DATASET="news",
                  SCHEDULES__MODELS='["models:/a@production", "models:/b/3"]', SCHEDULES__PROBE_SET="/p.jsonl",
                  SCHEDULES__PROBES_CRON="0 */6 * * *")
    data, probes = deployments(s, None)
    assert (data.flow_name, data.name, probes.flow_name, probes.name) == ("monitor_data", "data-news", "monitor_models", "probes")
    assert data.parameters == {"landing": "/data/in", "dataset": "news", "config": None}
    assert probes.parameters["models"] == ["models:/a@production", "models:/b/3"]
    assert data.schedules[0].schedule.interval.total_seconds() == 3 * 3600
    assert probes.schedules[0].schedule.cron == "0 */6 * * *"
    for d in (data, probes):
        assert d.concurrency_limit == 1 and d.concurrency_options.collision_strategy == "CANCEL_NEW"
    (fast,) = deployments(_settings(monkeypatch, SCHEDULES__MODELS="[]"), "cfg.yaml", data_every="20s")
    assert fast.schedules[0].schedule.interval.total_seconds() == 20
    assert fast.parameters["config"] == str(isolated / "cfg.yaml")


@pytest.mark.parametrize("env, message", [
    ({}, "nothing to schedule: set schedules.landing"),
    ({"SCHEDULES__MODELS": '["models:/a@p"]'}, "schedules.probe_set is not"),
    ({"SCHEDULES__LANDING": "/in", "SCHEDULES__DATA_EVERY": "often"}, "schedules.data_every: duration 'often'"),
])
def test_deployment_errors_name_the_setting(isolated, monkeypatch, env, message):
    with pytest.raises(UserError, match=message):
        deployments(_settings(monkeypatch, **env), None)


def test_serve_refuses_the_ephemeral_api(isolated, monkeypatch, capsys):
    monkeypatch.setenv("COLLAPSE_MONITOR_SCHEDULES__LANDING", str(isolated))
    assert main(["serve"]) == 2
    assert "schedules never fire on Prefect's ephemeral API" in capsys.readouterr().err
