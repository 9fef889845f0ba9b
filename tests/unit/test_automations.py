"""The dead man's switch's trigger and the event the scheduled flows emit for it, without a server: the trigger
must count a completed run whether Prefect's own Completed event reaches it or only ours (Prefect's triggers
service can hold a run's state-change events back for 15 minutes: see flows/automations.py)."""

import uuid
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from flows import automations
from flows.scheduled import monitor_data, monitor_models


@pytest.fixture
def installed(monkeypatch):
    """install()'s automations, captured instead of created on a server."""
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
    dep = uuid.uuid4()
    names = automations.install(dep, "monitor_data/data-x", "x", 20.0,
                                SimpleNamespace(_block_document_id=uuid.uuid4()))
    return dep, dict(zip(names, made))


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
    switch = made["collapse-monitor dead man's switch: monitor_data/data-x"]["trigger"]
    assert switch.posture == "Proactive" and switch.threshold == 1 and switch.within.total_seconds() == 60
    trigger = _server_trigger(switch)
    run = uuid.uuid4()
    for name in ("prefect.flow-run.Completed", automations.COMPLETED):
        assert trigger.covers(_event(name, run, dep)) and trigger.expects(name), name
    assert not trigger.expects("prefect.flow-run.Failed")
    assert not trigger.covers(_event(automations.COMPLETED, run, uuid.uuid4()))  # another deployment's run
    crashed = _server_trigger(made["collapse-monitor crashed run: monitor_data/data-x"]["trigger"])
    assert not crashed.expects(automations.COMPLETED)


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
