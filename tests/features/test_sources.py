"""The sources file: the user's own column names, formats, several files as one source, and a
PostgreSQL query read in chunks, all through the ordinary ingest contract."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from features import catalog
from features.catalog import read_canonical, read_quarantine
from features.contract import CONTRACTS
from features.sources import (
    ColumnMappingError,
    SourcesFileError,
    ingest_sources,
    load_sources,
    read_sources,
)

EXPORT = [
    {"CustomerID": "000123", "InvoiceDate": "2025-01-05T10:00:00Z", "Revenue": "25.50", "Country": "DE"},
    {"CustomerID": "000124", "InvoiceDate": "2025-02-06T11:30:00Z", "Revenue": "12", "Country": "FR"},
    {"CustomerID": "000123", "InvoiceDate": "2025-03-07T09:15:00Z", "Revenue": "7.25", "Country": "DE"},
]
MAPPING = """
    columns:
      customer_id: CustomerID
      timestamp: InvoiceDate
      amount: Revenue
"""


def write_yaml(folder: Path, text: str) -> Path:
    path = folder / "sources.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def write_csv(path: Path, rows: list[dict[str, str]], **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False, **options)
    return path


def versions(ws) -> list[str]:
    root = catalog.versions_root(ws)
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_given_an_export_with_its_own_column_names_when_mapped_then_every_row_is_accepted(ws, tmp_path, now):
    # given a transactions export named CustomerID, InvoiceDate, Revenue (and an extra column)
    write_csv(tmp_path / "in" / "orders.csv", EXPORT)
    sources = write_yaml(
        tmp_path / "in",
        "transactions:\n  path: orders.csv\n" + textwrap.indent(textwrap.dedent(MAPPING), "  "),
    )

    # when ingested through the sources file
    report = ingest_sources(ws, sources, now=now)

    # then every row is accepted, under the canonical columns, ids as written
    counts = report.sources["transactions"]
    assert (counts.read, counts.accepted, counts.quarantined, counts.duplicates) == (3, 3, 0, 0)
    assert report.reconciled and counts.file == "orders.csv"
    table = read_canonical(ws, "transactions")
    assert list(table.columns) == CONTRACTS["transactions"].names
    assert sorted(table["customer_id"]) == ["000123", "000123", "000124"]
    assert sorted(table["amount"]) == [7.25, 12.0, 25.5]
    assert counts.columns_supplied == ["customer_id", "timestamp", "amount"]


def test_given_two_csv_files_and_a_parquet_in_a_list_when_ingested_then_they_are_one_source(
    ws, tmp_path, now
):
    # given two CSV exports (one bad row in the second) and a Parquet file with other column names
    folder = tmp_path / "in"
    write_csv(folder / "shop" / "orders-2025-01.csv", EXPORT[:2])
    write_csv(folder / "shop" / "orders-2025-02.csv", [EXPORT[2], {**EXPORT[0], "Revenue": "lots"}])
    app = pd.DataFrame({"user_id": ["000125", "000126", "000127", "000123"],
                        "order_date": pd.to_datetime(["2025-04-01 10:00"] * 4).tz_localize("UTC"),
                        "total": [1.5, 2.5, 3.5, 4.5], "channel": ["app"] * 4})  # fmt: skip
    app.to_parquet(folder / "app.parquet", index=False)
    sources = write_yaml(folder, """
        transactions:
          - path: shop/orders-*.csv
            columns: {customer_id: CustomerID, timestamp: InvoiceDate, amount: Revenue}
          - path: app.parquet
            columns: {customer_id: user_id, timestamp: order_date, amount: total}
    """)  # fmt: skip

    # when ingested
    report = ingest_sources(ws, sources, now=now)

    # then the counts of the three files add up, and the bad row is traced to its own file and line
    counts = report.sources["transactions"]
    assert (counts.read, counts.accepted, counts.quarantined) == (2 + 2 + 4, 7, 1)
    assert counts.read == counts.accepted + counts.quarantined + counts.duplicates
    assert counts.file == "shop/orders-*.csv + app.parquet"
    table = read_canonical(ws, "transactions")
    assert len(table) == 7 and sorted(table["channel"].dropna()) == ["app"] * 4
    quarantined = read_quarantine(ws, "transactions")
    row = quarantined.iloc[0]
    assert (row["_rule"], row["_source_file"], row["_row_number"]) == (
        "unparsable_number", "shop/orders-2025-02.csv", 2,
    )  # fmt: skip
    assert row["amount"] == "lots"


def test_given_decimal_commas_semicolons_day_first_local_times_when_parsed_then_utc_values_are_right(
    ws, tmp_path, now
):
    # given a Latin-1, ';'-separated export with decimal commas and day-first Berlin wall times
    rows = [
        {"Kunde": "K1", "Datum": "05/03/2025 10:00", "Betrag": "12,50", "Kategorie": "Café"},
        {"Kunde": "K2", "Datum": "05/05/2025 10:00", "Betrag": "1.234,56", "Kategorie": "Bücher"},
        {"Kunde": "K3", "Datum": "2025-03-05 10:00", "Betrag": "3", "Kategorie": "Spiele"},
        {"Kunde": "K4", "Datum": "5. März 2025", "Betrag": "3", "Kategorie": "Spiele"},
    ]
    write_csv(tmp_path / "in" / "kasse.csv", rows, sep=";", encoding="latin-1")
    sources = write_yaml(tmp_path / "in", """
        transactions:
          path: kasse.csv
          columns: {customer_id: Kunde, timestamp: Datum, amount: Betrag, category: Kategorie}
          delimiter: ";"
          encoding: latin-1
          decimal: ","
          thousands: "."
          date_format: "%d/%m/%Y %H:%M"
          timezone: Europe/Berlin
    """)  # fmt: skip

    # when ingested
    report = ingest_sources(ws, sources, now=now)

    # then winter (UTC+1) and summer (UTC+2) times land on the right UTC instants, amounts are numbers,
    # and the time that parses neither way is quarantined exactly as written
    table = read_canonical(ws, "transactions").set_index("customer_id")
    assert table.loc["K1", "timestamp"] == pd.Timestamp("2025-03-05 09:00", tz="UTC")
    assert table.loc["K2", "timestamp"] == pd.Timestamp("2025-05-05 08:00", tz="UTC")
    assert (table.loc["K1", "amount"], table.loc["K2", "amount"]) == (12.5, 1234.56)
    assert table.loc["K3", "timestamp"] == pd.Timestamp("2025-03-05 09:00", tz="UTC")  # ISO, also Berlin
    assert table.loc["K1", "category"] == "Café"
    assert report.sources["transactions"].rules == {"unparsable_timestamp": 1}
    assert read_quarantine(ws, "transactions").iloc[0]["timestamp"] == "5. März 2025"


def test_given_naive_typed_times_when_a_time_zone_is_given_then_they_are_read_as_its_wall_times(
    ws, tmp_path, now
):
    # given a Parquet file of naive New York times and ISO text with and without an offset
    folder = tmp_path / "in"
    folder.mkdir()
    naive = pd.to_datetime(["2025-01-10 12:00", "2025-05-10 12:00"])
    pd.DataFrame({"customer_id": ["A", "B"], "timestamp": naive, "amount": [1.0, 2.0]}).to_parquet(
        folder / "typed.parquet", index=False
    )
    write_csv(folder / "text.csv", [{"customer_id": "C", "timestamp": "2025-01-10T12:00:00", "amount": "3"},
                                    {"customer_id": "D", "timestamp": "2025-01-10T12:00:00+01:00", "amount": "4"}])  # fmt: skip
    sources = write_yaml(folder, """
        transactions:
          - {path: typed.parquet, timezone: America/New_York}
          - {path: text.csv, timezone: America/New_York}
    """)  # fmt: skip

    # when ingested
    ingest_sources(ws, sources, now=now)

    # then naive times are New York wall times and an explicit offset is kept
    times = read_canonical(ws, "transactions").set_index("customer_id")["timestamp"]
    assert times["A"] == pd.Timestamp("2025-01-10 17:00", tz="UTC")  # EST, UTC-5
    assert times["B"] == pd.Timestamp("2025-05-10 16:00", tz="UTC")  # EDT, UTC-4
    assert times["C"] == pd.Timestamp("2025-01-10 17:00", tz="UTC")
    assert times["D"] == pd.Timestamp("2025-01-10 11:00", tz="UTC")


def test_given_a_mapping_naming_a_missing_column_when_ingested_then_it_is_refused_and_nothing_is_written(
    ws, tmp_path, now
):
    # given a committed version, and a sources file whose mapping misspells Revenue in one of two inputs
    write_csv(tmp_path / "in" / "orders.csv", EXPORT)
    ingest_sources(ws, write_yaml(tmp_path / "in", "transactions:\n  path: orders.csv\n" + textwrap.indent(textwrap.dedent(MAPPING), "  ")),
                   now=now)  # fmt: skip
    before = versions(ws), catalog.current_version(ws)
    write_csv(tmp_path / "in" / "more.csv", EXPORT)
    sources = write_yaml(tmp_path / "in", """
        transactions:
          - path: orders.csv
            columns: {customer_id: CustomerID, timestamp: InvoiceDate, amount: Revenue}
          - path: more.csv
            columns: {customer_id: CustomerID, timestamp: InvoiceDate, amount: Revnue}
    """)  # fmt: skip

    # when ingested
    with pytest.raises(ColumnMappingError) as refused:
        ingest_sources(ws, sources, now=now)

    # then the refusal names the source, the column and the closest name, and no version is added
    error = refused.value
    assert (error.source, error.column, error.closest) == ("transactions", "Revnue", ["Revenue"])
    assert "more.csv" in str(error) and "'Revnue'" in str(error) and "closest: Revenue" in str(error)
    assert (versions(ws), catalog.current_version(ws)) == before


def test_given_a_required_column_left_unmapped_when_ingested_then_it_is_refused_with_the_closest_names(
    ws, tmp_path, now
):
    # given an export whose amount column is Amount_EUR and a mapping that leaves amount out
    rows = [{k if k != "Revenue" else "Amount_EUR": v for k, v in row.items()} for row in EXPORT]
    write_csv(tmp_path / "in" / "orders.csv", rows)
    sources = write_yaml(tmp_path / "in", """
        transactions:
          path: orders.csv
          columns: {customer_id: CustomerID, timestamp: InvoiceDate}
    """)  # fmt: skip

    # when ingested
    with pytest.raises(ColumnMappingError) as refused:
        ingest_sources(ws, sources, now=now)

    # then it names the canonical column and the closest of the data's names; nothing is written
    assert (refused.value.source, refused.value.column) == ("transactions", "amount")
    assert refused.value.closest[0] == "Amount_EUR"
    assert "amount: <their column>" in str(refused.value)
    assert catalog.current_version(ws) is None and versions(ws) == []


def test_given_a_sources_file_with_mistakes_when_loaded_then_the_error_names_the_file_and_line(tmp_path):
    # given a misspelt setting on line 4, a YAML syntax error, and a column the contract does not have
    misspelt = write_yaml(tmp_path, "transactions:\n  path: orders.csv\n  timezone: UTC\n  delimeter: ';'\n")
    (tmp_path / "broken.yaml").write_text("transactions:\n  path: [orders.csv\n  columns: {}\n")
    (tmp_path / "unknown.yaml").write_text("transactions:\n  path: o.csv\n  columns:\n    amont: Revenue\n")

    # when loaded, then each refusal says where
    with pytest.raises(
        SourcesFileError, match=r"sources.yaml:4: transactions.delimeter: .*closest: delimiter"
    ):
        load_sources(misspelt)
    with pytest.raises(SourcesFileError, match=r"broken.yaml:\d: not valid YAML"):
        load_sources(tmp_path / "broken.yaml")
    with pytest.raises(SourcesFileError, match=r"unknown.yaml:1: .*'amont' is not a column.*closest: amount"):
        load_sources(tmp_path / "unknown.yaml")


@pytest.fixture(scope="module")
def orders_table():
    """A PostgreSQL database of its own with an ``orders`` table (user_id, order_date naive, total
    numeric), dropped afterwards; yields its URL."""
    import psycopg2

    from tests.postgres import fresh_database

    with fresh_database("cxp_sources") as url:
        with psycopg2.connect(url) as connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE orders (user_id text, order_date timestamp, total numeric(10, 2), "
                           "region text)")  # fmt: skip
            cursor.executemany(
                "INSERT INTO orders VALUES (%s, %s, %s, %s)",
                [(f"{n % 9:05d}", datetime(2025, 1 + n % 12, 1 + n % 28, n % 24), f"{n}.{n % 100:02d}",
                  "north" if n % 2 else None) for n in range(50)],
            )  # fmt: skip
        yield url


def database_yaml(folder: Path, url: str, *extra: str) -> Path:
    lines = [f"  url: {url}", "  query: SELECT user_id, order_date, total FROM orders ORDER BY total",
             "  columns: {customer_id: user_id, timestamp: order_date, amount: total}", *extra]  # fmt: skip
    return write_yaml(folder, "transactions:\n" + "\n".join(lines) + "\n")


@pytest.mark.services
def test_given_a_postgresql_table_when_read_in_small_chunks_then_the_rows_equal_one_read(
    orders_table, tmp_path
):
    # given the same query read in chunks of 7 rows and in one chunk
    chunked = load_sources(database_yaml(tmp_path, orders_table, "  chunk_size: 7"))
    whole = load_sources(database_yaml(tmp_path, orders_table, "  chunk_size: 1000"))
    stages: list[tuple[str, int, int]] = []

    # when read
    small = read_sources(chunked, lambda stage, done, total, note="": stages.append((stage, done, total)))
    one = read_sources(whole)

    # then several chunks happened, with progress in rows, and the rows are the same
    progress = [done for stage, done, total in stages if stage.startswith("read transactions")]
    assert progress[-1] == 50 and len(progress) >= 1 + 50 // 7
    assert all(total == 50 for stage, _, total in stages)
    pd.testing.assert_frame_equal(small["transactions"].frame, one["transactions"].frame)
    assert list(one["transactions"].frame.columns) == ["customer_id", "timestamp", "amount"]
    assert one["transactions"].frame["customer_id"].iloc[0] == "00000"
    assert sorted(small["transactions"].origins["_row_number"]) == list(range(1, 51))


@pytest.mark.services
def test_given_a_postgresql_query_when_ingested_then_its_rows_are_canonical_in_utc(
    orders_table, ws, tmp_path
):
    # given a query over naive local times, with the password-free URL
    sources = database_yaml(tmp_path, orders_table, "  timezone: Europe/Paris", "  chunk_size: 16")

    # when ingested
    report = ingest_sources(ws, sources, now=datetime(2026, 1, 1, tzinfo=UTC))

    # then every row is accepted and the times are Paris wall times in UTC
    counts = report.sources["transactions"]
    assert (counts.read, counts.accepted, counts.quarantined) == (50, 50, 0)
    assert counts.file.startswith("postgresql://postgres@127.0.0.1:5432/cxp_sources_")
    table = read_canonical(ws, "transactions").sort_values("amount", ignore_index=True)
    assert table.loc[0, ["customer_id", "amount"]].tolist() == ["00000", 0.0]
    assert table.loc[0, "timestamp"] == pd.Timestamp("2024-12-31 23:00", tz="UTC")  # 2025-01-01 00:00 CET


def test_the_documented_example_sources_file_is_valid():
    example = load_sources(Path(__file__).resolve().parents[2] / "docs" / "sources.example.yaml")

    inputs = example.inputs()
    assert list(inputs) == ["customers", "transactions", "events"]
    assert [item.path or item.url.split("@")[0] for item in inputs["transactions"]] == [
        "exports/shop/orders-*.csv", "postgresql://reporting:${CX_DB_PASSWORD}",
    ]  # fmt: skip
    assert "CX_DB_PASSWORD" not in inputs["events"][0].label and "***" in inputs["events"][0].label
