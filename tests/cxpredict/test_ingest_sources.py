"""``cxpredict ingest --sources``: a sources file through the command line, its refusals (exit 2, one
line on stderr, nothing written), and the rule that it is not combined with the per-source flags."""

from __future__ import annotations

import json
import textwrap

import pandas as pd
import pytest
from typer.testing import CliRunner

from cxpredict.cli import app
from cxpredict.workspace import resolve_workspace
from features import catalog

EXPORT = [
    {"user_id": "u-01", "order_date": "03.01.2025", "total": "19,99"},
    {"user_id": "u-02", "order_date": "04.01.2025", "total": "5,00"},
    {"user_id": "u-01", "order_date": "09.02.2025", "total": "7,50"},
]
SOURCES = """
    transactions:
      path: exports/orders.csv
      columns: {customer_id: user_id, timestamp: order_date, amount: {amount}}
      delimiter: ";"
      decimal: ","
      date_format: "%d.%m.%Y"
"""


@pytest.fixture
def ws(tmp_path):
    return resolve_workspace(tmp_path / "ws")


@pytest.fixture
def sources_file(tmp_path):
    """Write the export and a sources file mapping ``amount`` to the given column; returns its path."""
    (tmp_path / "exports").mkdir()
    pd.DataFrame(EXPORT).to_csv(tmp_path / "exports" / "orders.csv", sep=";", index=False)

    def write(amount: str = "total"):
        path = tmp_path / "sources.yaml"
        path.write_text(textwrap.dedent(SOURCES).replace("{amount}", amount))
        return path

    return write


def run(ws, *options: str):
    return CliRunner().invoke(app, ["ingest", "-w", str(ws.root), *options], catch_exceptions=False)


def test_given_a_sources_file_when_ingesting_as_json_then_every_row_is_accepted(ws, sources_file):
    result = run(ws, "--sources", str(sources_file()), "--json")

    assert result.exit_code == 0, result.output
    transactions = json.loads(result.stdout)["sources"]["transactions"]
    assert (transactions["read"], transactions["accepted"], transactions["reconciled"]) == (3, 3, True)
    assert transactions["file"] == "exports/orders.csv"
    amounts = sorted(catalog.read_canonical(ws, "transactions")["amount"])
    assert amounts == [5.0, 7.5, 19.99]


def test_given_a_mapping_naming_a_missing_column_when_ingesting_then_it_exits_2_naming_it(ws, sources_file):
    result = run(ws, "--sources", str(sources_file(amount="totl")), "--json")

    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "'totl'" in message and "closest: total" in message and "transactions" in message
    assert result.stdout == ""
    assert catalog.current_version(ws) is None


def test_given_sources_and_a_source_flag_when_ingesting_then_it_is_refused(ws, sources_file, tmp_path):
    result = run(
        ws, "--sources", str(sources_file()), "--transactions", str(tmp_path / "exports" / "orders.csv")
    )

    assert result.exit_code == 2
    assert "not both" in " ".join(result.stderr.split())
    assert catalog.current_version(ws) is None


def test_ingest_help_points_to_the_example_sources_file():
    result = CliRunner().invoke(app, ["ingest", "--help"], env={"COLUMNS": "200"})

    assert "--sources" in result.stdout and "docs/sources.example.yaml" in result.stdout
