from pathlib import Path

import pytest

from monitors.config import DEFAULT_RULES, load_settings
from monitors.core.errors import ConfigError


def test_defaults_work_without_any_file(isolated):
    s = load_settings()
    assert s.dataset == "default"
    assert s.state_path == isolated / ".collapse-monitor"
    assert s.mlflow_tracking_uri() == f"sqlite:///{isolated / '.collapse-monitor' / 'mlflow.db'}"
    assert s.mlflow_artifact_root() == (isolated / ".collapse-monitor" / "artifacts").as_uri()
    assert s.prefect_api() is None
    assert s.rules_path == DEFAULT_RULES and DEFAULT_RULES.is_file()
    assert s.detector.model_uri == "models:/collapse-detector@production"


def test_yaml_file_overrides_defaults_and_environment_overrides_file(isolated, monkeypatch):
    f = isolated / "cm.yaml"
    f.write_text("dataset: news\nindicators:\n  window: 500\ndetector:\n  model_uri: models:/x@staging\n")
    monkeypatch.setenv("COLLAPSE_MONITOR_DETECTOR__MODEL_URI", "models:/y@production")
    s = load_settings(f)
    assert (s.dataset, s.indicators.window, s.detector.model_uri) == ("news", 500, "models:/y@production")


def test_default_file_in_working_directory_is_read(isolated):
    (isolated / "collapse-monitor.yaml").write_text("dataset: from-default-file\n")
    assert load_settings().dataset == "from-default-file"


def test_config_env_variable_names_the_file(isolated, monkeypatch):
    f = isolated / "elsewhere.yaml"
    f.write_text("dataset: via-env\n")
    monkeypatch.setenv("COLLAPSE_MONITOR_CONFIG", str(f))
    assert load_settings().dataset == "via-env"


def test_bad_value_in_file_names_file_and_key(isolated):
    f = isolated / "cm.yaml"
    f.write_text("indicators:\n  head_mass: 1.5\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(f)
    msg = str(exc.value)
    assert str(f) in msg and "indicators.head_mass" in msg and "1.5" in msg


def test_bad_value_in_environment_names_the_variable(isolated, monkeypatch):
    monkeypatch.setenv("COLLAPSE_MONITOR_INDICATORS__WINDOW", "-3")
    with pytest.raises(ConfigError, match="environment variable COLLAPSE_MONITOR_INDICATORS__WINDOW: indicators.window"):
        load_settings()


def test_dead_man_switch_floor_defaults_to_60_s_and_refuses_what_prefect_would(isolated, monkeypatch):
    assert load_settings().alerts.dead_man_min_seconds == 60
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERTS__DEAD_MAN_MIN_SECONDS", "10")
    assert load_settings().alerts.dead_man_min_seconds == 10  # Prefect's own minimum for a proactive trigger
    for bad in ("9.5", "nan", "inf"):
        monkeypatch.setenv("COLLAPSE_MONITOR_ALERTS__DEAD_MAN_MIN_SECONDS", bad)
        with pytest.raises(ConfigError, match="environment variable COLLAPSE_MONITOR_ALERTS__DEAD_MAN_MIN_SECONDS: "
                                              r"alerts\.dead_man_min_seconds: ") as exc:
            load_settings()
        assert bad in str(exc.value)
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERTS__DEAD_MAN_MIN_SECONDS", "5")
    with pytest.raises(ConfigError, match=r"must be at least 10 seconds \(Prefect's minimum window"):
        load_settings()


def test_unknown_key_is_an_error_not_ignored(isolated):
    f = isolated / "cm.yaml"
    f.write_text("detector:\n  modl_uri: x\n")
    with pytest.raises(ConfigError, match=r"detector\.modl_uri: unknown setting"):
        load_settings(f)


@pytest.mark.parametrize("text, fragment", [
    ("dataset: [unclosed\n", "not valid YAML at line"),
    ("- a\n- b\n", "must hold a mapping"),
    ("dataset: a/b\n", "dataset"),
])
def test_malformed_files(isolated, text, fragment):
    f = isolated / "cm.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_settings(f)


def test_missing_file_is_named(isolated):
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_settings(Path("nope.yaml"))


def test_standard_mlflow_and_prefect_variables_are_honoured(isolated, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4299/api")
    s = load_settings()
    assert s.mlflow_tracking_uri() == "http://127.0.0.1:5999"
    assert s.mlflow_artifact_root() is None  # a server chooses its own artifact store
    assert s.prefect_api() == "http://127.0.0.1:4299/api"


def test_file_setting_beats_standard_variable(isolated, monkeypatch):
    f = isolated / "cm.yaml"
    f.write_text("tracking_uri: sqlite:///x.db\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert load_settings(f).mlflow_tracking_uri() == "sqlite:///x.db"


def test_prepare_points_local_stores_at_the_state_dir(isolated):
    import os

    from monitors.adapters.runtime import prepare

    rt = prepare(load_settings())
    assert rt.prefect_api_url is None
    assert os.environ["MLFLOW_TRACKING_URI"] == rt.tracking_uri
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert (isolated / ".collapse-monitor").is_dir()
