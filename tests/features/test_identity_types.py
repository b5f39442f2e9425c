"""Identifiers are text from every format: numeric id columns are refused unless converted on request,
CSV ids keep their leading zeros, and ids that meet only once leading zeros are stripped are reported."""

from __future__ import annotations

import io
import os

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cxpredict.render import ingest_report as format_report
from features import catalog
from features.catalog import read_canonical, read_profile
from features.contract import ContractError
from features.ingest import (
    IdentifierTypeError,
    IngestError,
    NumericIdentifierError,
    ingest,
)


def purchases(ids: list[object]) -> pd.DataFrame:
    """One valid purchase per id, the id column typed as given (ints make an int64 Parquet column)."""
    return pd.DataFrame({
        "customer_id": ids,
        "timestamp": [f"2025-01-{day:02d}T10:00:00Z" for day in range(1, len(ids) + 1)],
        "amount": [10.0] * len(ids),
    })  # fmt: skip


def crm(ids: list[str]) -> list[dict[str, str]]:
    return [
        {"customer_id": i, "region": "north", "email": f"person{n}@example.com"} for n, i in enumerate(ids)
    ]


def state(ws) -> tuple[str | None, list[str]]:
    """The committed version the canonical link points at and every version folder on disk."""
    link = os.readlink(ws.canonical_dir) if ws.canonical_dir.is_symlink() else None
    versions = ws.root / catalog.VERSIONS_DIR
    return link, sorted(p.name for p in versions.iterdir()) if versions.exists() else []


def test_given_an_int64_customer_id_parquet_when_ingested_then_it_is_refused_naming_source_column_and_type(
    ws, write_raw, now
):
    path = write_raw("transactions", purchases([3238, 3239]), fmt="parquet")

    with pytest.raises(NumericIdentifierError) as refused:
        ingest(ws, now=now)

    message = str(refused.value)
    assert str(path) in message and "transactions" in message
    assert "'customer_id'" in message and "int64" in message and "--numeric-ids convert" in message
    assert isinstance(refused.value, ContractError) and isinstance(refused.value, ValueError)
    assert (refused.value.source, refused.value.column, refused.value.type_name) == (
        "transactions", "customer_id", "int64")  # fmt: skip
    assert state(ws) == (None, [])


def test_given_a_committed_state_when_a_numeric_id_file_is_refused_then_no_new_version_is_written(
    ws, write_raw, customers, transactions, now
):
    write_raw("transactions", transactions)
    ingest(ws, now=now)
    before = state(ws)
    write_raw("customers", customers)
    write_raw("transactions", purchases([3238]), fmt="parquet")

    with pytest.raises(NumericIdentifierError):
        ingest(ws, now=now)

    assert state(ws) == before
    assert read_canonical(ws, "customers") is None
    assert read_canonical(ws, "transactions")["customer_id"].tolist() == ["C1", "C1", "C2"]


@pytest.mark.parametrize(
    ("source", "rows", "column", "type_name"),
    [
        ("transactions", purchases(["C1"]).assign(loyalty_card=[1234]), "loyalty_card", "int64"),
        ("transactions", purchases([3238.0, None]), "customer_id", "double"),
        ("customers", pd.DataFrame({"customer_id": ["C1"], "phone": [447946000001]}), "phone", "int64"),
    ],
)
def test_given_any_numeric_identity_column_when_ingested_then_it_is_refused_with_its_name_and_type(
    ws, write_raw, transactions, now, source, rows, column, type_name
):
    if source != "transactions":
        write_raw("transactions", transactions)
    write_raw(source, rows, fmt="parquet")

    with pytest.raises(
        NumericIdentifierError, match=rf"{source} identifier column '{column}' is typed {type_name}"
    ):
        ingest(ws, now=now)

    assert state(ws) == (None, [])


def test_given_int64_ids_and_the_convert_option_when_ingested_then_they_match_the_crm_zero_padded_ids(
    ws, write_raw, now
):
    write_raw("customers", crm(["0003238", "0003239"]))
    write_raw("transactions", purchases([3238, 3239, 3238]), fmt="parquet")

    report = ingest(ws, now=now, numeric_ids="convert", customer_id_width=7)

    assert read_canonical(ws, "transactions")["customer_id"].tolist() == ["0003238", "0003239", "0003238"]
    assert read_profile(ws)["customer_id"].tolist() == ["0003238", "0003239"]
    assert read_profile(ws)["sources"].tolist() == ["customers,transactions"] * 2
    assert report.profile_rows == 2
    assert report.sources["transactions"].converted_ids == {"customer_id": "int64"}
    assert report.sources["customers"].converted_ids == {}
    assert report.id_mismatches == [] and report.reconciled


def test_given_float_ids_with_nulls_and_the_convert_option_then_whole_numbers_become_digits(
    ws, write_raw, now
):
    write_raw("transactions", purchases([3238.0, None]).assign(loyalty_card=["LC1", "LC1"]), fmt="parquet")
    write_raw("customers", [{"customer_id": "3238", "loyalty_card": "LC1"}])

    report = ingest(ws, now=now, numeric_ids="convert")

    assert read_canonical(ws, "transactions")["customer_id"].tolist() == ["3238", "3238"]
    assert report.sources["transactions"].linked == {"loyalty_card": 1}
    assert report.profile_rows == 1


@pytest.mark.parametrize(
    ("ids", "what"),
    [([3238.5], "not whole numbers"), ([-7], "negative values"), ([1e17], "too large"), ([True], None)],
)
def test_given_ids_that_are_not_whole_non_negative_numbers_then_even_convert_refuses_them(
    ws, write_raw, now, ids, what
):
    write_raw("transactions", purchases(ids), fmt="parquet")

    with pytest.raises(IdentifierTypeError, match="'customer_id' is typed") as refused:
        ingest(ws, now=now, numeric_ids="convert")

    assert what is None or what in str(refused.value)
    assert state(ws) == (None, [])


def test_given_a_width_without_the_convert_option_then_ingest_refuses_the_options(
    ws, write_raw, transactions, now
):
    write_raw("transactions", transactions)

    with pytest.raises(IngestError, match="customer_id_width"):
        ingest(ws, now=now, customer_id_width=7)

    assert state(ws) == (None, [])


def test_given_csv_ids_with_leading_zeros_when_ingested_then_every_identifier_keeps_them(ws, write_raw, now):
    write_raw("customers", [{"customer_id": "0003238", "phone": "07946 000001", "loyalty_card": "0001"}])
    write_raw("transactions", [
        {"customer_id": "0003238", "timestamp": "2025-01-01", "amount": "5"},
        {"customer_id": "", "loyalty_card": "0001", "timestamp": "2025-01-02", "amount": "6"},
    ])  # fmt: skip

    report = ingest(ws, now=now)

    customers = read_canonical(ws, "customers")
    assert customers["customer_id"].tolist() == ["0003238"]
    assert customers[["phone", "loyalty_card"]].iloc[0].tolist() == ["07946 000001", "0001"]
    assert read_canonical(ws, "transactions")["customer_id"].tolist() == ["0003238", "0003238"]
    assert report.sources["transactions"].linked == {"loyalty_card": 1}
    assert read_profile(ws)["customer_id"].tolist() == ["0003238"]
    assert report.id_mismatches == [] and report.reconciled


def test_given_transaction_ids_without_the_crms_leading_zeros_then_the_mismatch_is_counted_and_shown(
    ws, write_raw, now
):
    write_raw("customers", crm(["0003238", "0003239", "0000077"]))
    write_raw("transactions", purchases(["3238", "3239", "3239", "0000077", "0003240"]))

    report = ingest(ws, now=now)

    [mismatch] = report.id_mismatches
    assert (mismatch.source, mismatch.other, mismatch.ids) == ("transactions", "customers", 2)
    assert mismatch.examples == [("3238", "0003238"), ("3239", "0003239")]
    assert report.profile_rows == 6
    assert not report.reconciled
    assert all(s.reconciled for s in report.sources.values())
    console = Console(file=io.StringIO(), width=240)
    console.print(format_report(report))
    text = console.file.getvalue()
    assert "rows yes, ids NO" in text
    assert "2 customer_id(s) of transactions match customers ids only after stripping leading zeros" in text
    assert "3238 ~ 0003238" in text and "example.com" not in text


@pytest.mark.slow  # the CLI's refusal handler imports the training stack (MLflow)
def test_given_an_int64_id_file_when_the_cli_ingests_it_then_it_exits_2_with_the_one_line_reason(
    ws, write_raw, tmp_path
):
    from cxpredict.cli import app

    path = write_raw("transactions", purchases([3238]), fmt="parquet", folder=tmp_path / "drop")

    result = CliRunner().invoke(app, ["ingest", "--transactions", str(path), "--workspace", str(ws.root)])

    assert result.exit_code == 2
    assert "refused" in result.stderr and "'customer_id' is typed int64" in " ".join(result.stderr.split())
    assert state(ws) == (None, [])
