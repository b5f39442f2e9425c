"""``cxpredict ingest`` as a script uses it: ``--json`` prints the report as one JSON document, and a
required source that ends with no accepted row fails (exit 2) with the top quarantine rules, leaving
the canonical state as it was."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from cxpredict import documents
from cxpredict.cli import app
from cxpredict.workspace import resolve_workspace
from features import catalog

GOOD = [
    {"customer_id": "C1", "timestamp": "2025-01-05T10:00:00Z", "amount": "25.50"},
    {"customer_id": "C2", "timestamp": "2025-03-01T08:30:00Z", "amount": "99"},
]


@pytest.fixture
def ws(tmp_path):
    return resolve_workspace(tmp_path / "ws")


def write(path, rows) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def day_first(rows: int) -> list[dict[str, str]]:
    """Transactions whose times are written dd/mm/YYYY HH:MM, which the contract does not accept."""
    return [
        {
            "customer_id": f"C{n % 40}",
            "timestamp": f"{n % 28 + 1:02d}/03/2025 10:{n % 60:02d}",
            "amount": "10",
        }
        for n in range(rows)
    ]


def ingest(ws, transactions: str, *options: str):
    return CliRunner().invoke(
        app, ["ingest", "--transactions", transactions, "-w", str(ws.root), *options], catch_exceptions=False
    )


def test_given_valid_transactions_when_ingesting_as_json_then_stdout_is_the_report(ws, tmp_path):
    result = ingest(ws, write(tmp_path / "in" / "transactions.csv", GOOD), "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert list(report) == list(documents.INGEST_KEYS)
    transactions = report["sources"]["transactions"]
    assert (transactions["read"], transactions["accepted"], transactions["reconciled"]) == (2, 2, True)
    assert report["version"] == catalog.current_version(ws).name
    assert report["profile_rows"] == 2


def test_given_every_transaction_quarantined_when_ingesting_then_it_fails_naming_the_rule(ws, tmp_path):
    result = ingest(ws, write(tmp_path / "in" / "transactions.csv", day_first(300)))

    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "no transactions row was accepted" in message
    assert "unparsable_timestamp: 300" in message
    assert result.stdout == ""
    assert catalog.current_version(ws) is None


def test_given_a_canonical_version_when_a_file_is_all_quarantined_then_the_version_stays(ws, tmp_path):
    assert ingest(ws, write(tmp_path / "in" / "good.csv", GOOD)).exit_code == 0
    before = catalog.current_version(ws)
    versions = sorted(catalog.versions_root(ws).iterdir())

    result = ingest(ws, write(tmp_path / "in" / "transactions.csv", day_first(5)), "--json")

    assert result.exit_code == 2
    assert result.stdout == ""
    assert catalog.current_version(ws) == before
    assert sorted(catalog.versions_root(ws).iterdir()) == versions
