"""Feature refreshes under load: every answer comes from one complete snapshot, a killed refresh
leaves the previous one whole, and every worker agrees on which snapshot is served."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pandas as pd
import pytest

from cxpredict import tasks as registry
from features.feast_internals import SqliteOnlineStore
from features.online import EVENT_TIME, OnlineReader
from features.store import open_store, snapshot_as_of
from tests.serving.server_fixtures import start_server

pytestmark = pytest.mark.slow
SNAPSHOT = datetime(2026, 11, 1, tzinfo=UTC)
LATER = datetime(2026, 11, 20, tzinfo=UTC)


def _services() -> tuple[str, ...]:
    return tuple(spec.feature_service for spec in registry.all_tasks())


def _ids(ws, n: int = 60) -> list[str]:
    frame = pd.read_parquet(ws.features_dir / "engagement", columns=["customer_id"])
    return sorted(frame.customer_id.unique())[:n]


def _vectors(reader: OnlineReader, ids: list[str]) -> list[tuple]:
    """Per customer: the snapshot time and every stored value read in one statement."""
    columns = reader.read(ids, _services(), datetime(2026, 12, 1, tzinfo=UTC), event_times=True)
    names = sorted(name for name in columns if name != "customer_id")
    return [tuple(columns[name][i] for name in names) for i in range(len(ids))]


def _features(ws, *more: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "cxpredict.cli", "features", "--workspace", str(ws.root), *more]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def test_given_a_refresh_under_load_then_every_answer_is_the_old_or_the_new_snapshot_whole(private_workspace):
    # given the vectors of 60 customers before the refresh
    ws, ids = private_workspace, _ids(private_workspace)
    reader = OnlineReader(open_store(ws))
    old = _vectors(reader, ids)
    answers, stop = [], threading.Event()

    def load() -> None:
        while not stop.is_set():
            reader.refresh()  # as a server does when the registry file changes
            answers.append(_vectors(reader, ids))

    # when a reader keeps reading while `cxpredict features` moves to a later snapshot
    worker = threading.Thread(target=load)
    worker.start()
    try:
        assert _features(ws, "--as-of", LATER.date().isoformat()).wait(timeout=600) == 0
        finished = len(answers)
        deadline = time.monotonic() + 60
        while len(answers) <= finished and time.monotonic() < deadline:  # one read after the commit
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join()
    new = _vectors(reader, ids)

    # then every answer, for every customer, is the old vector or the new one, never a mix
    assert old != new and len(answers) > 5
    for answer in answers:
        assert all(vector in (before, after) for vector, before, after in zip(answer, old, new, strict=True))
    assert {answer == old for answer in answers} == {True, False} or answers[-1] == new


def test_given_a_refresh_killed_mid_write_then_the_previous_snapshot_is_served_whole(private_workspace):
    # given a workspace serving the 2026-11-01 snapshot
    ws = private_workspace
    store = open_store(ws)
    wal = f"{SqliteOnlineStore._get_db_path(store.config)}-wal"
    # when `cxpredict features` is killed with SIGKILL while it writes the online store
    process = _features(ws, "--as-of", LATER.date().isoformat())
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if os.path.exists(wal) and os.path.getsize(wal) > 4_000_000:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the refresh ended before it could be killed mid-write"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    # then the online store still holds the old snapshot for every customer, and says so
    reader = OnlineReader(open_store(ws))
    ids = _ids(ws, 10_000)
    stamps = reader.read(ids, _services(), datetime(2026, 12, 1, tzinfo=UTC), event_times=True)[EVENT_TIME]
    assert set(stamps) == {SNAPSHOT.timestamp()}
    assert snapshot_as_of(ws, open_store(ws)) == SNAPSHOT


def test_given_two_workers_when_the_snapshot_moves_then_both_report_it_and_refuse_the_same_events(
    private_workspace, tmp_path
):
    # given a two-worker server on the 2026-11-01 snapshot
    ws = private_workspace
    server = start_server(ws, tmp_path / "server.log", workers=2)
    try:
        with server.client() as client:
            before = {client.get("/readyz").json()["features_as_of"] for _ in range(20)}
            # when features move to 2026-11-20 (no reload call)
            assert _features(ws, "--as-of", LATER.date().isoformat()).wait(timeout=600) == 0
            after = {client.get("/readyz").json()["features_as_of"] for _ in range(20)}
            late = [
                client.post(
                    "/events",
                    json={
                        "customer_id": _ids(ws, 1)[0],
                        "event_type": "page_view",
                        "timestamp": "2026-11-10T00:00:00Z",
                    },
                ).status_code
                for _ in range(12)
            ]
    finally:
        server.stop()
    # then every answer names the new snapshot, and an event the new snapshot already covers is refused by all
    assert before == {"2026-11-01T00:00:00Z"}
    assert after == {"2026-11-20T00:00:00Z"}
    assert late == [400] * 12


def test_given_the_online_store_file_moved_away_then_readiness_says_so_and_recovers_when_it_is_back(
    private_workspace,
):
    from serving.online_features import OnlineFeatures

    # given a process serving the workspace's online store
    features = OnlineFeatures(private_workspace)
    features.warm(_services())
    path = features.online_path
    assert features.probe() is None
    # when the file is moved away, then readiness names it; when it is back, readiness recovers
    path.rename(path.with_name("moved.db"))
    try:
        missing = features.probe()
    finally:
        path.with_name("moved.db").rename(path)
    assert missing is not None and "online store file is missing" in missing
    assert features.probe() is None
