"""The dead man's switch's trigger and the event the scheduled flows emit for it, without a server: the trigger
must count a completed run whether Prefect's own Completed event reaches it or only ours (Prefect's triggers
service can hold a run's state-change events back for 15 minutes: see flows/automations.py)."""

import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from flows import automations
from flows.scheduled import monitor_data, monitor_models
from monitors.config import AlertSettings
from monitors.core.rules import fingerprint


@pytest.fixture
def fake_automations(monkeypatch):
    """Automations that install() creates, captured (their keyword arguments) instead of created on a server."""
    import prefect.automations

    made = []

    class FakeAutomation:
        def __init__(self, **kw):
            self.kw = kw

        @staticmethod
        def read(name):
            raise ValueError(name)

        def create(self):
            made.append(self.kw)

    monkeypatch.setattr(prefect.automations, "Automation", FakeAutomation)
    return made


@pytest.fixture
def installed(fake_automations):
    """install()'s automations of a deployment run every 20 s, with the default shortest window."""
    dep = uuid.uuid4()
    names = automations.install(dep, "monitor_data/data-x", "x", 20.0,
                                SimpleNamespace(_block_document_id=uuid.uuid4()))
    return dep, dict(zip(names, fake_automations))


SWITCH = "collapse-monitor dead man's switch: monitor_data/data-x"


def _server_trigger(client_trigger):
    from prefect.server.events.schemas.automations import EventTrigger

    return EventTrigger.model_validate(client_trigger.model_dump(mode="json"))


def _event(name: str, run: uuid.UUID, deployment: uuid.UUID):
    from prefect.server.events.schemas.events import Event

    return Event(occurred=datetime.now(timezone.utc), event=name,
                 resource={"prefect.resource.id": f"prefect.flow-run.{run}"},
                 related=[{"prefect.resource.id": f"prefect.deployment.{deployment}",
                           "prefect.resource.role": "deployment"}], id=uuid.uuid4()).receive()


def test_the_switch_counts_prefects_completed_event_and_ours(installed):
    dep, made = installed
    switch = made[SWITCH]["trigger"]
    assert switch.posture == "Proactive" and switch.threshold == 1 and switch.within.total_seconds() == 60
    trigger = _server_trigger(switch)
    run = uuid.uuid4()
    for name in ("prefect.flow-run.Completed", automations.COMPLETED):
        assert trigger.covers(_event(name, run, dep)) and trigger.expects(name), name
    assert not trigger.expects("prefect.flow-run.Failed")
    assert not trigger.covers(_event(automations.COMPLETED, run, uuid.uuid4()))  # another deployment's run
    crashed = _server_trigger(made["collapse-monitor crashed run: monitor_data/data-x"]["trigger"])
    assert not crashed.expects(automations.COMPLETED)


def _switch(made: list[dict]) -> dict:
    (switch,) = [m for m in made if m["name"] == SWITCH]
    return switch


def _window_and_message(switch: dict) -> tuple[float, str]:
    return switch["trigger"].within.total_seconds(), switch["actions"][0].body


def test_the_switchs_window_is_twice_the_interval_with_a_60_s_floor_by_default(isolated, fake_automations):
    from monitors.config import load_settings

    assert automations.MIN_WINDOW_SECONDS == 60 == AlertSettings().dead_man_min_seconds
    block = SimpleNamespace(_block_document_id=uuid.uuid4())
    for interval, window in ((20.0, 60), (45.0, 90)):
        fake_automations.clear()
        automations.install(uuid.uuid4(), "monitor_data/data-x", "x", interval, block)
        assert _window_and_message(_switch(fake_automations)) == (
            window, f"No run of monitor_data/data-x completed in the last {window} s (twice its interval): the "
                    "scheduler, the worker or the serve process may be down. Fingerprint "
                    f"{fingerprint('schedule_dead', 'x')}.")
    fake_automations.clear()
    automations.install(uuid.uuid4(), "monitor_data/data-x", "x", 20.0, block,
                        load_settings().alerts.dead_man_min_seconds)  # what serve passes when nothing is set
    assert _window_and_message(_switch(fake_automations))[0] == 60


def test_the_switchs_floor_setting_reaches_the_trigger(isolated, fake_automations, monkeypatch):
    """alerts.dead_man_min_seconds, from the environment, through watch() (as serve calls it) to the trigger."""
    from monitors.config import load_settings

    monkeypatch.setenv("COLLAPSE_MONITOR_ALERTS__DEAD_MAN_MIN_SECONDS", "25")
    floor = load_settings().alerts.dead_man_min_seconds
    assert floor == 25
    monkeypatch.setattr(automations, "notification_block",
                        lambda urls, dataset: SimpleNamespace(_block_document_id=uuid.uuid4()))

    def deployment(every: float | None):
        schedule = SimpleNamespace(interval=timedelta(seconds=every) if every else None)
        return SimpleNamespace(parameters={"dataset": "x"}, schedules=[SimpleNamespace(schedule=schedule)],
                               apply=uuid.uuid4, flow_name="monitor_data", name="data-x")

    for every, window in ((5.0, 25), (20.0, 40), (None, None)):  # the floor, twice the interval, no switch on cron
        fake_automations.clear()
        lines = automations.watch([deployment(every)], ["json://127.0.0.1/hook"], floor)
        if window is None:
            assert not [m for m in fake_automations if m["name"] == SWITCH] and "no dead man's switch" in lines[-1]
            continue
        got, message = _window_and_message(_switch(fake_automations))
        assert got == window and f"completed in the last {window} s" in message
        trigger = _server_trigger(_switch(fake_automations)["trigger"])  # the server accepts it as it is
        assert trigger.within == timedelta(seconds=window)


def test_completed_runs_of_a_deployment_announce_themselves(monkeypatch):
    import prefect.events

    sent = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: sent.append(kw))
    run, dep = uuid.uuid4(), uuid.uuid4()
    automations.announce_completed(None, SimpleNamespace(id=run, name="monitor x", deployment_id=dep), None)
    automations.announce_completed(None, SimpleNamespace(id=uuid.uuid4(), name="ad hoc", deployment_id=None), None)
    assert len(sent) == 1 and sent[0]["event"] == automations.COMPLETED
    assert sent[0]["resource"]["prefect.resource.id"] == f"prefect.flow-run.{run}"
    assert sent[0]["related"] == [{"prefect.resource.id": f"prefect.deployment.{dep}", "prefect.resource.role": "deployment"}]
    assert "follows" not in sent[0]  # what makes it reach the trigger at once
    for f in (monitor_data, monitor_models):
        assert automations.announce_completed in f.on_completion_hooks
