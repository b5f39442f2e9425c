"""``cxpredict forget`` as an operator runs it: by file, ``--json``, the audit, refusals that erase
nothing, and a run killed half-way (a forked process that SIGKILLs itself after a given place) that a
second run of the same request (or ``--resume``) finishes."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3

import pandas as pd
import pytest
from typer.testing import CliRunner

from cxpredict import documents
from cxpredict.cli import app
from features import catalog, erasure
from tests.features.test_erasure import scan_workspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ws(featurised_world, copy_workspace, tmp_path_factory):
    """A private copy of the session's featurised world (with its online store materialised)."""
    from features.store import materialize_latest

    copy = copy_workspace(featurised_world.ws, tmp_path_factory.mktemp("forget") / "ws")
    materialize_latest(copy, end=featurised_world.features_as_of)
    return copy


@pytest.fixture(scope="module")
def people(ws) -> pd.DataFrame:
    """Customers with an email of their own (not a shared inbox), in a fixed order; each test forgets
    its own."""
    customers = catalog.read_canonical(ws, "customers").dropna(subset=["email"])
    inbox = customers["email"].str.strip().str.lower()
    return customers[~inbox.duplicated(keep=False).to_numpy()].sort_values("customer_id")


def forget(ws, *options: str):
    return CliRunner().invoke(app, ["forget", "-w", str(ws.root), *options], catch_exceptions=False)


def online_customers(ws) -> set[str]:
    connection = sqlite3.connect(ws.feast_dir / "online_store.db")
    try:
        tables = [name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        table = next(t for t in tables if t.endswith("_purchase"))
        keys = [key for (key,) in connection.execute(f'SELECT DISTINCT entity_key FROM "{table}"')]
    finally:
        connection.close()
    return {key[len(erasure.ENTITY_KEY_PREFIX) + 4 :].decode() for key in keys}


def test_a_file_with_a_header_forgets_by_email_and_id_and_prints_no_identifier(ws, people, tmp_path):
    # given a request file naming an email and a customer id, plus one email nobody has
    first, second = people.iloc[0], people.iloc[1]
    request = tmp_path / "request.csv"
    pd.DataFrame(
        {"email": [first["email"], "nobody@example.org"], "customer_id": [second["customer_id"], ""]}
    ).to_csv(request, index=False)

    # when forget runs with --json
    result = forget(ws, "--file", str(request), "--json", "--actor", "privacy-team")

    # then one document says what was removed, counts the unknown email, and never echoes a value
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    (entry,) = document["requests"]
    assert list(entry) == list(documents.FORGET_KEYS)
    assert (entry["customers"], entry["not_found"], entry["identifiers"], entry["actor"]) == (
        2,
        1,
        3,
        "privacy-team",
    )
    assert entry["removed"]["online_store"]["customers"] == 2 and entry["removed"]["raw"]["rows"] > 0
    shown = result.stdout + result.stderr
    for value in (first["customer_id"], first["email"], second["customer_id"], "nobody@example.org"):
        assert value not in shown
    assert not {first["customer_id"], second["customer_id"]} & online_customers(ws)


def test_one_id_per_line_and_the_audit_lists_every_request_hashed(ws, people, tmp_path):
    ids = list(people["customer_id"].iloc[2:4])
    request = tmp_path / "ids.txt"
    request.write_text("\n".join(ids) + "\n")

    assert forget(ws, "--file", str(request)).exit_code == 0
    audit = forget(ws, "--audit", "--json")

    assert audit.exit_code == 0
    entries = json.loads(audit.stdout)["requests"]
    assert entries[-1]["customers"] == 2 and len({e["subject"] for e in entries}) == len(entries)
    assert not any(customer in audit.stdout for customer in ids)
    table = forget(ws, "--audit")
    assert "Erasure audit" in table.stdout and not any(customer in table.stdout for customer in ids)


def test_a_request_file_with_an_unknown_column_is_refused_and_nothing_is_erased(ws, people, tmp_path):
    before = erasure.read_tombstones(ws), len(erasure.read_audit(ws))
    request = tmp_path / "bad.csv"
    pd.DataFrame({"email": [people.iloc[5]["email"]], "passport": ["X1"]}).to_csv(request, index=False)

    result = forget(ws, "--file", str(request))

    assert result.exit_code == 2
    assert (
        "bad.csv" in result.stderr
        and "passport" in result.stderr
        and people.iloc[5]["email"] not in result.stderr
    )
    assert (erasure.read_tombstones(ws), len(erasure.read_audit(ws))) == before
    assert people.iloc[5]["customer_id"] in online_customers(ws)


def _killed(ws, identifiers: dict[str, list[str]], after: str) -> int:
    """Run a request in a forked process that kills itself (SIGKILL) once ``after`` is done; its exit code."""

    def run() -> None:
        os.environ[erasure.KILL_AFTER_ENV] = after
        erasure.forget(ws, erasure.Request(identifiers=identifiers))

    child = multiprocessing.get_context("fork").Process(target=run)
    child.start()
    child.join(timeout=300)
    return child.exitcode


def test_killed_half_way_a_second_run_of_the_same_request_finishes_it(ws, people):
    # given a request killed (SIGKILL) right after the feature snapshots were erased
    target = people.iloc[8]
    audited = len(erasure.read_audit(ws))
    assert _killed(ws, {"customer_id": [target["customer_id"]]}, after="features") == -signal.SIGKILL
    (journal,) = erasure.pending(ws)
    assert set(journal.done) == {"raw", "canonical", "mlflow", "features"}
    assert target["customer_id"] in online_customers(ws)
    journal_text = "".join(p.read_text() for p in (ws.erasure_dir / erasure.PENDING_DIR).iterdir())
    assert target["customer_id"] not in journal_text and journal.digests["customer_id"]

    # when the same request runs again
    again = forget(ws, "--customer-id", target["customer_id"], "--json")

    # then it finishes the job: one audit entry, marked resumed, and no trace left in the workspace
    assert again.exit_code == 0, again.output
    (entry,) = json.loads(again.stdout)["requests"]
    assert entry["resumed"] == 1 and entry["removed"]["online_store"]["customers"] == 1
    assert entry["removed"]["raw"]["rows"] > 0
    assert erasure.pending(ws) == [] and len(erasure.read_audit(ws)) == audited + 1
    assert scan_workspace(ws.root, {target["customer_id"], target["email"]}) == {}


def test_killed_before_the_logs_resume_finishes_every_pending_request(ws, people):
    target = people.iloc[9]
    assert _killed(ws, {"email": [target["email"]]}, after="canonical") == -signal.SIGKILL
    assert len(erasure.pending(ws)) == 1

    resumed = forget(ws, "--resume", "--json")

    assert resumed.exit_code == 0, resumed.output
    (entry,) = json.loads(resumed.stdout)["requests"]
    assert entry["resumed"] == 1 and entry["customers"] == 1
    assert erasure.pending(ws) == []
    assert scan_workspace(ws.root, {target["customer_id"], target["email"]}) == {}
    nothing = forget(ws, "--resume")
    assert nothing.exit_code == 0 and "no erasure request was pending" in nothing.stdout
