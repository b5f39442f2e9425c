"""The same registry commands against a real ``mlflow server`` backed by PostgreSQL (127.0.0.1:5432,
trust auth as ``postgres``), selected by ``MLFLOW_TRACKING_URI`` only, give the same results as the
workspace's SQLite file: train two versions, promote, rollback, list, and race alias moves.

Each run creates a fresh database and drops it afterwards; the server runs on a free port with its
artifacts in a temporary folder, and is started first so it boots while the models are fitted and
the SQLite run happens.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import mlflow
import psycopg2
import pytest
from rich.console import Console
from worlds import blank_database, with_profile, workspace_from

from shown import card_command, models_command, promote_command, rollback_command
from training.pipeline import build_dataset, fit_task
from training.promotion import evaluation_sets
from training.model_registry import AliasConflict, alias_version, move_alias, read_history
from training.tracking import log_task, resolve_tracking

pytestmark = [pytest.mark.services, pytest.mark.slow]
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
GATE = {"ece_bound": 0.05, "tolerance": 0.02}


def _postgres() -> psycopg2.extensions.connection:
    try:
        return psycopg2.connect(dbname="postgres", connect_timeout=3, **POSTGRES)
    except psycopg2.OperationalError:
        version = min(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").exists() else None
        if version:
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False
            )
            for _ in range(30):
                try:
                    return psycopg2.connect(dbname="postgres", connect_timeout=3, **POSTGRES)
                except psycopg2.OperationalError:
                    time.sleep(1)
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (.ci/run starts it)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A fresh PostgreSQL database and an ``mlflow server`` on it; ``ready()`` waits for it."""
    database = f"cxp_mlflow_{uuid.uuid4().hex[:12]}"
    admin = _postgres()
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{database}"')
    folder = tmp_path_factory.mktemp("server")
    port = _free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")), "server",
        "--backend-store-uri", f"postgresql://postgres@127.0.0.1:5432/{database}",
        "--default-artifact-root", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    with open(folder / "server.log", "w") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=folder,
            start_new_session=True,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        )

        def ready() -> str:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                assert process.poll() is None, (folder / "server.log").read_text()[-3000:]
                try:
                    if httpx.get(f"{uri}/health", timeout=1).status_code == 200:
                        return uri
                except httpx.HTTPError:
                    pass
                time.sleep(0.25)
            pytest.fail("mlflow server did not become ready: " + (folder / "server.log").read_text()[-3000:])

        try:
            yield SimpleNamespace(ready=ready, database=database)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.close()


@pytest.fixture(scope="module")
def fits(small_world, kit):
    features_for = with_profile(kit.features_for(small_world.tables))
    config = kit.config(tasks=("churn",))
    dataset, needs = build_dataset("churn", small_world.tables, features_for, config)
    return SimpleNamespace(
        config=config,
        dataset=dataset,
        first=fit_task("churn", dataset, needs, config),
        second=fit_task("churn", dataset, needs, kit.config(tasks=("churn",), seed=1)),
        evaluation_set=evaluation_sets(small_world.tables, features_for, kit.AS_OF),
    )


def scenario(ws, fits) -> SimpleNamespace:
    """Train two versions, promote the second, roll back, list; the outcome as plain values."""
    target = resolve_tracking(ws)
    quiet = Console(file=io.StringIO(), width=200)
    logged = [
        log_task(target, fitted, fits.dataset, fits.config, "snapshot-1")
        for fitted in (fits.first, fits.second)
    ]
    promoted = promote_command(
        ws, "churn", evaluation_set=fits.evaluation_set, actor="ana", console=quiet, **GATE
    )
    rolled = rollback_command(ws, "churn", actor="ops", console=quiet)
    listing = models_command(ws, history=True, as_json=True, console=quiet)
    churn = next(task for task in listing["tasks"] if task["task"] == "churn")
    client = mlflow.MlflowClient(tracking_uri=target.tracking_uri, registry_uri=target.tracking_uri)
    return SimpleNamespace(
        target=target,
        client=client,
        card=card_command(ws, "churn", "2"),
        outcome={
            "logged": [(item.model_version, item.champion) for item in logged],
            "promoted": (
                promoted.exit_code,
                promoted.candidate,
                promoted.champion_before,
                promoted.champion_after,
                [check.name for check in promoted.checks if not check.passed],
            ),
            "candidate_auc": round(promoted.metrics["candidate"]["auc"], 10),
            "rolled": (rolled.exit_code, rolled.champion_before, rolled.champion_after),
            "aliases": churn["aliases"],
            "history": [
                (e["alias"], e["action"], e["from_version"], e["to_version"], e["actor"])
                for e in churn["history"]
            ],
            "versions": [
                (
                    row["version"],
                    row["aliases"],
                    round(row["auc"], 10),
                    row["rows_train"],
                    row["data_hash"],
                    row["cutoff_test"],
                    row["feature_count"],
                )
                for row in churn["versions"]
            ],
            "problems": churn["history_problems"],
        },
    )


@pytest.fixture(scope="module")
def runs(server, fits, tmp_path_factory):
    template = blank_database(tmp_path_factory.mktemp("template"))
    sqlite = scenario(workspace_from(template, tmp_path_factory.mktemp("sqlite")), fits)
    uri = server.ready()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(tmp_path_factory.mktemp("cwd"))
        remote = scenario(tmp_path_factory.mktemp("unused-workspace"), fits)
    return SimpleNamespace(sqlite=sqlite, remote=remote, uri=uri)


def test_given_the_server_uri_when_running_the_commands_then_they_use_the_server(runs):
    assert runs.remote.target.tracking_uri == runs.uri
    assert [model.name for model in runs.remote.client.search_registered_models()] == ["cx-churn"]
    assert alias_version(runs.remote.client, "cx-churn", "champion") == "1"


def test_given_postgres_and_sqlite_when_running_the_same_scenario_then_the_results_are_the_same(runs):
    remote, local = runs.remote.outcome, runs.sqlite.outcome

    assert remote == local
    assert remote["promoted"] == (0, "2", "1", "2", [])
    assert remote["rolled"] == (0, "2", "1")
    assert remote["aliases"] == {"champion": "1", "challenger": "2"}
    assert [move[:4] for move in remote["history"]] == [
        ("challenger", "train", None, "1"),
        ("champion", "initial", None, "1"),
        ("challenger", "train", "1", "2"),
        ("champion", "promote", "1", "2"),
        ("champion", "rollback", "2", "1"),
    ]
    assert remote["problems"] == []


def test_given_the_server_when_reading_a_model_card_then_it_matches_the_sqlite_one_apart_from_ids(runs):
    def stable(card: str) -> str:
        return "\n".join(line for line in card.splitlines() if "training run" not in line)

    assert stable(runs.remote.card) == stable(runs.sqlite.card)
    assert "## Metrics by slice" in runs.remote.card


def test_given_the_server_when_threads_race_to_move_the_champion_then_exactly_one_wins(runs):
    uri = runs.uri
    client = runs.remote.client
    client.create_registered_model("cx-race")
    run_id = client.get_model_version("cx-churn", "1").run_id
    versions = [
        client.create_model_version("cx-race", f"runs:/{run_id}/model", run_id).version for _ in range(5)
    ]
    move_alias(client, "cx-race", "champion", "1", action="initial", reason="setup", expected_from=None)
    start, outcomes = threading.Barrier(4), []

    def contender(version: str) -> None:
        own = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        start.wait()
        try:
            move_alias(
                own, "cx-race", "champion", version, action="promote", reason="race", expected_from="1"
            )
            outcomes.append(version)
        except AliasConflict:
            pass

    threads = [threading.Thread(target=contender, args=(str(v),)) for v in versions[1:]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(outcomes) == 1
    history = read_history(client, "cx-race")
    assert [(e.from_version, e.to_version) for e in history] == [(None, "1"), ("1", outcomes[0])]
    assert alias_version(client, "cx-race", "champion") == outcomes[0]
