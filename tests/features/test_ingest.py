"""Ingest end to end: reconciliation, refusal, idempotence, appends, atomic commits, reports."""

from __future__ import annotations

import re
import hashlib
import io
import json
import os

import pandas as pd
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from rich.progress import Progress

from features import catalog
from features.catalog import canonical_manifest, read_canonical, read_profile, read_quarantine
from features.contract import CONTRACTS, ContractError
from cxpredict.render import RichProgress
from cxpredict.render import ingest_report as format_report
from features.ingest import MissingColumnError, MissingSourceError, ingest


def snapshot(ws) -> dict[str, object]:
    """Everything a reader could see of the canonical state: the link and the bytes of every file."""
    link = ws.canonical_dir
    if not link.is_symlink():
        return {"link": None}
    version = link.resolve()
    files = {str(p.relative_to(version)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(version.rglob("*")) if p.is_file()}  # fmt: skip
    assert read_canonical(ws, "transactions") is not None
    return {"link": os.readlink(link), "files": files}


def test_given_a_mixed_file_when_ingested_then_read_equals_accepted_plus_quarantined_plus_duplicates(
    ws, write_raw, transactions, now
):
    bad = {**transactions[0], "amount": "-1", "returned": "false"}
    unparsable = {**transactions[2], "timestamp": "later"}
    write_raw("transactions", [*transactions, transactions[0], bad, unparsable])

    report = ingest(ws, now=now)

    source = report.sources["transactions"]
    assert (source.read, source.accepted, source.quarantined, source.duplicates) == (6, 3, 2, 1)
    assert source.erased == 0
    assert source.rules == {"negative_amount": 1, "unparsable_timestamp": 1}
    assert report.reconciled
    assert len(read_canonical(ws, "transactions")) == 3
    assert sorted(read_quarantine(ws, "transactions")["_row_number"]) == [5, 6]


def test_given_a_file_missing_a_required_column_when_ingested_then_it_is_refused_and_nothing_is_written(
    ws, write_raw, transactions, now
):
    without_amount = [{k: v for k, v in row.items() if k != "amount"} for row in transactions]
    path = write_raw("transactions", without_amount)

    with pytest.raises(MissingColumnError) as refused:
        ingest(ws, now=now)

    assert "transactions.csv" in str(refused.value) and "'amount'" in str(refused.value)
    assert isinstance(refused.value, ContractError)
    assert refused.value.file == path and refused.value.columns == ["amount"]
    assert not ws.canonical_dir.exists()
    assert not (ws.root / catalog.VERSIONS_DIR).exists()


def test_given_a_committed_state_when_a_later_file_lacks_a_column_then_the_previous_state_is_untouched(
    ws, write_raw, transactions, customers, now
):
    write_raw("transactions", transactions)
    ingest(ws, now=now)
    before = snapshot(ws)
    write_raw("customers", [{k: v for k, v in row.items() if k != "customer_id"} for row in customers])

    with pytest.raises(MissingColumnError, match="customers.csv.*customer_id"):
        ingest(ws, now=now)

    assert snapshot(ws) == before
    assert read_canonical(ws, "customers") is None


def test_given_no_transactions_file_when_ingested_then_it_is_refused_with_a_clear_error(
    ws, write_raw, customers, now
):
    write_raw("customers", customers)

    with pytest.raises(MissingSourceError, match="transactions"):
        ingest(ws, now=now)

    assert not ws.canonical_dir.exists()


def test_given_the_same_files_when_ingested_twice_then_the_second_run_adds_nothing(
    ws, write_raw, transactions, customers, now
):
    write_raw("transactions", [*transactions, {**transactions[0], "amount": "oops"}])
    write_raw("customers", customers)
    first = ingest(ws, now=now)
    before = snapshot(ws)

    second = ingest(ws, now=now)

    assert first.sources["transactions"].accepted == 3
    for source in ("transactions", "customers"):
        assert second.sources[source].accepted == 0
        assert second.sources[source].quarantine_added == 0
        assert second.sources[source].duplicates == first.sources[source].accepted
    assert second.sources["transactions"].quarantined == 1
    after = snapshot(ws)["files"]
    for name in ("transactions.parquet", "customers.parquet", "quarantine/transactions.parquet"):
        assert after[name] == before["files"][name]
    assert len(read_canonical(ws, "customers")) == 2


def test_given_a_later_file_with_new_rows_when_ingested_then_they_are_appended(
    ws, write_raw, transactions, now
):
    write_raw("transactions", transactions[:2])
    ingest(ws, now=now)

    write_raw("transactions", transactions[1:])
    report = ingest(ws, now=now)

    source = report.sources["transactions"]
    assert (source.accepted, source.duplicates) == (1, 1)
    table = read_canonical(ws, "transactions")
    assert table["order_id"].tolist() == ["O1", "O2", "O3"]
    assert canonical_manifest(ws).sources["transactions"].rows == 3


def test_given_a_write_failing_half_way_when_ingesting_then_the_old_tables_and_symlink_survive(
    ws, write_raw, transactions, customers, now, monkeypatch
):
    write_raw("transactions", transactions[:1])
    ingest(ws, now=now)
    before = snapshot(ws)
    write_raw("transactions", transactions)
    write_raw("customers", customers)
    real_writer = catalog.write_parquet
    written: list[str] = []

    def fail_after_first(table, path):
        if written:
            raise OSError("disk full (injected)")
        written.append(path.name)
        real_writer(table, path)

    monkeypatch.setattr(catalog, "write_parquet", fail_after_first)

    with pytest.raises(OSError, match="injected"):
        ingest(ws, now=now)

    assert written == ["customers.parquet"]
    assert snapshot(ws) == before
    assert read_canonical(ws, "customers") is None
    assert [p.name for p in (ws.root / catalog.VERSIONS_DIR).iterdir()] == [os.path.basename(before["link"])]


def test_given_three_commits_then_only_the_current_and_previous_versions_are_kept(
    ws, write_raw, transactions, now
):
    links = []
    for end in (1, 2, 3):
        write_raw("transactions", transactions[:end])
        ingest(ws, now=now)
        links.append(os.readlink(ws.canonical_dir))

    kept = sorted(p.name for p in (ws.root / catalog.VERSIONS_DIR).iterdir())

    assert kept == sorted(os.path.basename(link) for link in links[1:])
    assert not any(p.name.endswith(".tmp") for p in ws.root.iterdir())


def test_given_transactions_with_only_the_required_columns_then_ingest_works_end_to_end(ws, write_raw, now):
    write_raw("transactions", [
        {"customer_id": "C1", "timestamp": "2025-01-01", "amount": "5"},
        {"customer_id": "C2", "timestamp": "2025-01-02", "amount": "7.5"},
    ])  # fmt: skip

    report = ingest(ws, now=now)

    table = read_canonical(ws, "transactions")
    schema = pq.read_schema(ws.canonical_dir / "transactions.parquet")
    assert schema == CONTRACTS["transactions"].arrow_schema()
    assert list(table.columns) == CONTRACTS["transactions"].names
    assert table["channel"].isna().all() and table["quantity"].isna().all()
    assert canonical_manifest(ws).supplied("transactions") == ["customer_id", "timestamp", "amount"]
    assert canonical_manifest(ws).supplied("events") == []
    profile = read_profile(ws)
    assert profile["customer_id"].tolist() == ["C1", "C2"]
    assert profile["sources"].tolist() == ["transactions", "transactions"]
    assert report.profile_rows == 2
    assert read_canonical(ws, "events") is None


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_given_csv_or_parquet_input_then_both_yield_the_same_canonical_table(
    ws, write_raw, transactions, now, fmt
):
    frame = pd.DataFrame(transactions)
    if fmt == "parquet":
        frame = frame.assign(
            timestamp=pd.to_datetime(frame["timestamp"], utc=True), amount=frame["amount"].astype(float),
            quantity=frame["quantity"].astype(int), discount=pd.to_numeric(frame["discount"]),
            returned=frame["returned"] == "true",
        )  # fmt: skip
    write_raw("transactions", frame, fmt=fmt)

    report = ingest(ws, now=now)

    table = read_canonical(ws, "transactions")
    assert report.sources["transactions"].file == f"transactions.{fmt}"
    assert report.sources["transactions"].accepted == 3
    assert table["amount"].tolist() == [25.5, -25.5, 99.0]
    assert table["returned"].tolist() == [False, True, False]
    assert table["quantity"].tolist() == [1, 1, 3]
    assert table["timestamp"].iloc[2] == pd.Timestamp("2025-03-01T08:30:00Z")
    assert pd.isna(table["discount"].iloc[2])


def test_given_explicit_paths_when_ingested_then_only_those_files_are_read(
    ws, write_raw, transactions, customers, now, tmp_path
):
    write_raw("customers", customers)
    elsewhere = write_raw("transactions", transactions, fmt="parquet", folder=tmp_path / "drop")

    report = ingest(ws, paths={"transactions": elsewhere}, now=now)

    assert list(report.sources) == ["transactions"]
    assert read_canonical(ws, "customers") is None


def test_given_a_changed_customer_row_then_it_updates_and_keeps_columns_the_file_did_not_supply(
    ws, write_raw, transactions, customers, now
):
    write_raw("transactions", transactions)
    write_raw("customers", customers)
    ingest(ws, now=now)

    write_raw("customers", [{"customer_id": "C1", "region": "east"}, {"customer_id": "C1", "region": "west"},
                            {"customer_id": "C2", "region": "south"}])  # fmt: skip
    report = ingest(ws, now=now)

    source = report.sources["customers"]
    assert (source.accepted, source.updated, source.duplicates) == (2, 2, 1)
    table = read_canonical(ws, "customers").set_index("customer_id")
    assert table.loc["C1", "region"] == "west"
    assert table.loc["C1", "loyalty_tier"] == "gold"
    assert len(table) == 2


def test_given_a_progress_display_when_ingesting_then_every_stage_task_completes(
    ws, write_raw, transactions, now
):
    write_raw("transactions", transactions)
    console = Console(file=io.StringIO())

    with Progress(console=console) as progress:
        ingest(ws, now=now, progress=RichProgress(progress))
        tasks = {task.description: task for task in progress.tasks}

    assert set(tasks) == {"ingest transactions", "commit canonical version"}
    assert all(task.finished for task in tasks.values())


def test_given_a_report_when_formatted_then_the_table_shows_each_source_and_reconciliation(
    ws, write_raw, transactions, now
):
    write_raw("transactions", [*transactions, {**transactions[0], "amount": "x"}])
    report = ingest(ws, now=now)

    console = Console(file=io.StringIO(), width=200)
    console.print(format_report(report))
    text = console.file.getvalue()

    assert "transactions" in text and "yes" in text
    assert re.search(r"transactions\s*│\s*unparsable_number\s*│\s*1\s*│", text)
    stored = json.loads((ws.canonical_dir / catalog.REPORT_FILE).read_text())
    assert stored["sources"]["transactions"]["read"] == 4
