"""Interrupted training on a real SQLite store: a run ended by an exception, Ctrl-C or SIGTERM is
FAILED and registers nothing; a version whose training did not complete is flagged by ``models``
and refused by the gate; runs a ``kill -9`` left RUNNING are marked FAILED by the next train.

Trains churn only, on a 1,000-customer world (a few seconds per train on one LightGBM thread).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
from worlds import blank_database, workspace_from

from training import labels as L
from training import tracking
from training.commands import models_command, promote_command
from training.lifecycle import FAILURE_TAG, HOST_TAG, PID_TAG, STARTED_TAG, Terminated, process_tags
from training.model_registry import REQUIRED_LINEAGE
from training.pipeline import train
from training.promotion import TRAINING_RUN
from training.tasks import implementation
from training.tracking import ensure_experiment, resolve_tracking

pytestmark = pytest.mark.slow
TASK, MODEL, EXPERIMENT = "churn", "cx-churn", "cx-churn"
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return blank_database(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="module")
def tiny(kit) -> SimpleNamespace:
    world = kit.make_world(1000, seed=3)
    config = kit.config(tasks=(TASK,), shap_sample=50)
    return SimpleNamespace(tables=world.tables, features_for=kit.features_for(world.tables), config=config)


@pytest.fixture
def ws(template, tmp_path):
    return workspace_from(template, tmp_path / "ws")


def client_of(ws) -> mlflow.MlflowClient:
    uri = resolve_tracking(ws).tracking_uri
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def train_tiny(ws, tiny):
    return train(resolve_tracking(ws), tiny.tables, tiny.features_for, tiny.config)


def task_runs(client: mlflow.MlflowClient) -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def versions(client: mlflow.MlflowClient) -> list:
    return client.search_model_versions(f"name = '{MODEL}'")


def listed(ws) -> dict[str, dict]:
    [task] = models_command(ws, tasks=[TASK])["tasks"]
    return {row["version"]: row for row in task["versions"]}


def not_evaluated(task: str, horizon: int):
    pytest.fail("the gate evaluated a version it should have refused beforehand")


def interrupting(kind: str):
    """A churn ``fit`` that is interrupted once its run is open: by an error, Ctrl-C or SIGTERM."""

    def fit(*args, **kwargs):
        assert mlflow.active_run() is not None, "fitting happens inside the task's run"
        if kind == "error":
            raise RuntimeError("disk full while fitting")
        if kind == "ctrl-c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        raise AssertionError("SIGTERM did not interrupt the fit")

    return fit


@pytest.mark.parametrize(
    ("kind", "raised", "recorded"),
    [
        ("error", RuntimeError, "RuntimeError: disk full while fitting"),
        ("ctrl-c", KeyboardInterrupt, "KeyboardInterrupt"),
        ("sigterm", Terminated, "Terminated: terminated by signal SIGTERM"),
    ],
    ids=["error", "ctrl-c", "sigterm"],
)
def test_given_a_fit_interrupted_after_its_run_started_then_the_run_is_failed_and_nothing_is_registered(
    ws, tiny, monkeypatch, kind, raised, recorded
):
    # given a fit that is interrupted while its run is open, and a SIGTERM handler of the caller's
    monkeypatch.setattr(implementation(TASK), "fit", interrupting(kind))
    callers_handler = lambda signum, frame: None  # noqa: E731
    previous = signal.signal(signal.SIGTERM, callers_handler)
    try:
        # when training
        with pytest.raises(raised):
            train_tiny(ws, tiny)
        handler_after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)

    # then its one run ended FAILED, saying why and by whom, no version exists, and the handler is back
    client = client_of(ws)
    [run] = task_runs(client)
    assert run.info.status == "FAILED"
    assert run.data.tags[FAILURE_TAG] == recorded
    assert run.data.tags[PID_TAG] == str(os.getpid()) and run.data.tags[HOST_TAG] == socket.gethostname()
    assert versions(client) == []
    assert mlflow.active_run() is None
    assert handler_after is callers_handler


def test_given_a_fit_that_finds_the_task_unavailable_then_it_leaves_no_run(ws, tiny, monkeypatch):
    # given a fit that finds too few positives (as unmet needs can), once its run is open
    def unavailable(*args, **kwargs):
        raise L.LabelsUnavailable(TASK, "too few positives")

    monkeypatch.setattr(implementation(TASK), "fit", unavailable)

    # when training, then the task is unavailable with the reason and its run is gone (deleted)
    result = train_tiny(ws, tiny)[TASK]
    assert result.status == "unavailable" and result.reason == "too few positives"
    assert task_runs(client_of(ws)) == [] and versions(client_of(ws)) == []
    assert mlflow.active_run() is None


def test_given_a_train_interrupted_right_after_registration_then_its_version_is_flagged_and_refused(
    ws, tiny, monkeypatch
):
    # given a train that fails right after creating its version (while writing the model card)
    def card_fails(*args, **kwargs):
        raise OSError("artifact store unreachable")

    with monkeypatch.context() as patch:
        patch.setattr(tracking, "card_text", card_fails)
        with pytest.raises(OSError):
            train_tiny(ws, tiny)
    client = client_of(ws)
    [version] = versions(client)

    # then the version already carries its whole lineage (given at creation), but no alias
    assert set(REQUIRED_LINEAGE) <= set(version.tags)
    assert client.get_model_version(MODEL, version.version).aliases == []
    run = client.get_run(version.tags["run_id"])
    assert run.info.status == "FAILED" and "artifact store unreachable" in run.data.tags[FAILURE_TAG]

    # when listing the registry, then the version is flagged with the reason
    row = listed(ws)["1"]
    assert row["usable"] is False and row["run_status"] == "FAILED"
    assert "is FAILED, not FINISHED" in row["problem"] and "artifact store unreachable" in row["problem"]

    # when promoting it, then the gate refuses it before evaluating anything, and says why
    refused = promote_command(ws, TASK, version="1", evaluation_set=not_evaluated)
    assert refused.exit_code == 1 and not refused.moved and refused.champion_after is None
    assert [(check.name, check.passed) for check in refused.checks] == [(TRAINING_RUN, False)]
    assert "not usable" in refused.decision and "is FAILED" in refused.decision
    assert listed(ws)["1"]["last_gate"]["failed"] == [TRAINING_RUN]

    # when the next train completes, then its version is usable and becomes champion; the first is still flagged
    result = train_tiny(ws, tiny)[TASK]
    assert result.model_version == "2" and result.champion
    rows = listed(ws)
    assert (
        rows["2"]["usable"] is True and rows["2"]["problem"] is None and rows["2"]["run_status"] == "FINISHED"
    )
    assert rows["1"]["usable"] is False


def test_given_versions_without_a_finished_run_or_without_lineage_then_listing_flags_and_gate_refuses(ws):
    # given a version whose run is still RUNNING (full lineage) and one of a FINISHED run without lineage
    client = client_of(ws)
    experiment = ensure_experiment(client, EXPERIMENT, resolve_tracking(ws).artifact_root)
    client.create_registered_model(MODEL)
    running = client.create_run(experiment)
    finished = client.create_run(experiment)
    client.set_terminated(finished.info.run_id, "FINISHED")
    lineage = {key: "x" for key in REQUIRED_LINEAGE} | {"run_id": running.info.run_id}
    client.create_model_version(
        MODEL, f"runs:/{running.info.run_id}/model", running.info.run_id, tags=lineage
    )
    client.create_model_version(
        MODEL,
        f"runs:/{finished.info.run_id}/model",
        finished.info.run_id,
        tags={"run_id": finished.info.run_id},
    )

    # when listing, then both are flagged, each with its reason
    rows = listed(ws)
    assert rows["1"]["usable"] is False and "is RUNNING, not FINISHED" in rows["1"]["problem"]
    assert rows["2"]["usable"] is False and rows["2"]["run_status"] == "FINISHED"
    assert "lineage tags missing" in rows["2"]["problem"] and "data_hash" in rows["2"]["problem"]

    # when promoting either, then the gate refuses it without evaluating
    for version, reason in (("1", "is RUNNING"), ("2", "lineage tags missing")):
        refused = promote_command(ws, TASK, version=version, evaluation_set=not_evaluated)
        assert refused.exit_code == 1 and not refused.gate_passed and reason in refused.decision
        assert [check.name for check in refused.checks if not check.passed] == [TRAINING_RUN]


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_given_runs_left_running_when_the_next_train_starts_then_only_those_of_dead_processes_fail(ws, tiny):
    # given RUNNING runs: of a dead process, of a reused pid, of this live process, of another host,
    # and one that says nothing of its process
    client = client_of(ws)
    experiment = ensure_experiment(client, EXPERIMENT, resolve_tracking(ws).artifact_root)
    me, here = process_tags(), socket.gethostname()
    tagged = {
        "dead": {PID_TAG: str(dead_pid()), HOST_TAG: here},
        "reused": {**me, STARTED_TAG: "1"}
        if STARTED_TAG in me
        else {PID_TAG: str(dead_pid()), HOST_TAG: here},
        "alive": me,
        "elsewhere": {PID_TAG: str(dead_pid()), HOST_TAG: f"not-{here}"},
        "untagged": {},
    }
    runs = {name: client.create_run(experiment, tags=tags).info.run_id for name, tags in tagged.items()}

    # when the next train runs
    result = train_tiny(ws, tiny)[TASK]

    # then the runs of dead processes are FAILED with the reason, the others untouched, the new one FINISHED
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {
        "dead": "FAILED",
        "reused": "FAILED",
        "alive": "RUNNING",
        "elsewhere": "RUNNING",
        "untagged": "RUNNING",
    }
    reason = client.get_run(runs["dead"]).data.tags[FAILURE_TAG]
    assert f"process {tagged['dead'][PID_TAG]} on {here}" in reason
    trained = client.get_run(result.run_id)
    assert trained.info.status == "FINISHED" and trained.data.tags[PID_TAG] == str(os.getpid())
    assert listed(ws)[result.model_version]["usable"] is True


CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path

    sys.path.insert(0, sys.argv[3])
    from conftest import make_config, make_features_for, make_world
    from cxpredict.workspace import resolve_workspace
    from training import tracking
    from training.pipeline import train

    def hang(*args, **kwargs):  # right after the version is created, before the run ends
        Path(sys.argv[2]).write_text(str(os.getpid()))
        time.sleep(600)

    tracking.card_text = hang
    world = make_world(1000, seed=3)
    config = make_config(tasks=("churn",), shap_sample=50)
    train(tracking.resolve_tracking(resolve_workspace(sys.argv[1])), world.tables,
          make_features_for(world.tables), config)
    """
)


@pytest.mark.timeout(120)
def test_given_a_train_killed_with_sigkill_after_registration_then_it_is_flagged_and_the_next_train_fails_its_run(
    ws, tmp_path
):
    # given a train in another process, killed with SIGKILL once its version exists
    marker = tmp_path / "registered"
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ws.root), str(marker), str(HERE)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            if child.poll() is not None:
                pytest.fail(f"the training process exited early: {child.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the training process did not reach registration in time")
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    client = client_of(ws)
    [run] = task_runs(client)

    # then its run is left RUNNING, and its version is flagged and refused
    assert run.info.status == "RUNNING" and run.data.tags[PID_TAG] == str(child.pid)
    [version] = versions(client)
    assert set(REQUIRED_LINEAGE) <= set(version.tags) and version.tags["run_id"] == run.info.run_id
    row = listed(ws)[str(version.version)]
    assert row["usable"] is False and "is RUNNING" in row["problem"]
    refused = promote_command(ws, TASK, version=str(version.version), evaluation_set=not_evaluated)
    assert refused.exit_code == 1 and "is RUNNING" in refused.decision

    # when the next train starts (its first step), then the run is FAILED, and the version still flagged
    assert tracking.reap_abandoned(resolve_tracking(ws)) == [run.info.run_id]
    assert client.get_run(run.info.run_id).info.status == "FAILED"
    row = listed(ws)[str(version.version)]
    assert row["usable"] is False and "is FAILED" in row["problem"] and "killed?" in row["problem"]
