"""Right to erasure on a real trained world: every place, tombstones at re-ingest, a live server, the audit.

One copy of the session's trained world serves the whole module: it is materialised online, scored
(a Parquet score file and a CSV export in ``reports/``), served, given events, decisions and an
outcome for the customers to forget, and then ``forget`` runs while the server is up.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cxpredict.workspace import Workspace
from features import catalog, erasure
from features.contract import IDENTIFIER_KINDS, normalise_identifiers, normalise_name
from tests.serving.server_fixtures import ensure_champions, start_server


# --- the scan: every file of a workspace, decoded --------------------------------------------------


def _parquet_text(path: Path) -> str:
    table = pq.ParquetFile(path).read()
    parts = []
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            parts += [v for v in pa.compute.unique(column).to_pylist() if v is not None]
        elif pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            parts += [v.decode("utf-8", "replace") for v in pa.compute.unique(column).to_pylist() if v]
    return "\n".join(parts)


def _sqlite_text(path: Path) -> str:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        cells = []
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):
                cells += [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in row]
        return "\n".join(cells)
    finally:
        connection.close()


def scan_workspace(root: Path, needles: set[str]) -> dict[str, set[str]]:
    """Which needles (case-insensitive) appear in which file: Parquet decoded with pyarrow, SQLite
    read table by table, and every file's bytes as well (CSV, JSON, text, logs, MLflow artifacts,
    and free pages or WAL frames of a database)."""
    pattern = re.compile("|".join(sorted(map(re.escape, needles), key=len, reverse=True)), re.IGNORECASE)
    found: dict[str, set[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        raw = path.read_bytes()
        texts = [raw.decode("utf-8", "replace")]
        if path.suffix == ".parquet":
            texts.append(_parquet_text(path))
        elif raw[:16] == b"SQLite format 3\x00":
            texts.append(_sqlite_text(path))
        hits = {match.lower() for text in texts for match in pattern.findall(text)}
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


def _raw_frames(folder: Path) -> dict[str, pd.DataFrame]:
    from features.ingest import read_table

    return {path.stem: read_table(path).to_pandas() for path in sorted(folder.glob("*.*"))}


def identifiers_of(raw: dict[str, pd.DataFrame], customers: set[str]) -> dict[str, set[str]]:
    """Every identifier written next to these customers' ids in the raw files, by kind, as normalised,
    plus every spelling of it found anywhere in the raw files (what a scan must not find)."""
    normalised: dict[str, set[str]] = {kind: set() for kind in IDENTIFIER_KINDS}
    for frame in raw.values():
        frame = frame.rename(columns=normalise_name)
        kinds = [k for k in IDENTIFIER_KINDS if k in frame.columns]
        if "customer_id" not in frame.columns or not kinds:
            continue
        mine = frame[frame["customer_id"].isin(customers)]
        for kind, values in normalise_identifiers(mine[kinds]).items():
            normalised[kind] |= set(values.dropna())
    spellings = set()
    for frame in raw.values():
        frame = frame.rename(columns=normalise_name)
        kinds = [k for k in IDENTIFIER_KINDS if k in frame.columns]
        if kinds:
            forms = normalise_identifiers(frame[kinds])
            for kind in kinds:
                hit = forms[kind].isin(normalised[kind])
                spellings |= set(frame.loc[hit, kind].dropna().astype(str))
    return {"normalised": {v for values in normalised.values() for v in values}, "spellings": spellings}


def owners(raw: dict[str, pd.DataFrame], kind: str) -> pd.Series:
    """Per normalised identifier, how many customer ids carry it in the raw files."""
    pairs = []
    for frame in raw.values():
        frame = frame.rename(columns=normalise_name)
        if "customer_id" in frame.columns and kind in frame.columns:
            forms = normalise_identifiers(frame[[kind]])[kind]
            pairs.append(pd.DataFrame({"id": frame["customer_id"], "value": forms}).dropna())
    both = pd.concat(pairs).drop_duplicates()
    return both.groupby("value")["id"].nunique()


def example_owners(ws: Workspace) -> set[str]:
    """Customers whose snapshot row is a row of a logged model's input example (joined over families)."""
    example = json.loads(next(ws.mlflow_dir.rglob("input_example.json")).read_text())
    families = []
    for family in sorted(p for p in ws.features_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        frames = [pd.read_parquet(path).assign(__date=path.parent.name)
                  for path in sorted(family.glob("snapshot_date=*/data.parquet"))]  # fmt: skip
        frame = pd.concat(frames, ignore_index=True)
        keep = ["customer_id", "__date"] + [c for c in frame.columns if c in example["columns"]]
        families.append(frame[keep])
    joined = families[0]
    for frame in families[1:]:
        joined = joined.merge(frame, on=["customer_id", "__date"], how="outer")
    columns = [c for c in example["columns"] if c in joined.columns]
    rows = pd.DataFrame(example["data"], columns=example["columns"])[columns]
    found = set()
    for _, row in rows.iterrows():
        same = pd.Series(True, index=joined.index)
        for column in columns:
            value = row[column]
            same &= joined[column].isna() if pd.isna(value) else (joined[column] == value)
        found |= set(joined.loc[same, "customer_id"])
    return found


# --- a small hand-made workspace (fast) ------------------------------------------------------------


def test_given_a_forgotten_email_reingest_drops_every_row_of_that_customer_and_the_books_balance(
    ws, write_raw, transactions, customers, now, tmp_path
):
    from features.ingest import ingest

    # given two customers, C1 also known by an email-only marketing row, kept as original files too
    marketing = [{"email": " ANN.LEE@example.com", "timestamp": "2025-03-02T08:00:00Z", "action": "opened"},
                 {"customer_id": "C2", "timestamp": "2025-03-02T08:00:00Z", "action": "opened"}]  # fmt: skip
    paths = {"transactions": write_raw("transactions", transactions, folder=tmp_path / "orig"),
             "customers": write_raw("customers", customers, folder=tmp_path / "orig"),
             "marketing": write_raw("marketing", marketing, folder=tmp_path / "orig")}  # fmt: skip
    ingest(ws, paths, now=now)

    # when C1 is forgotten by email and the original files are ingested again
    entry = erasure.forget(ws, erasure.Request(identifiers={"email": ["ann.lee@EXAMPLE.com"]}))
    report = ingest(ws, paths, now=now)

    # then C1's rows (the email-only one too) count as erased, the books balance, and only C2 is left
    assert entry.customers == 1 and entry.not_found == 0
    erased = {name: s.erased for name, s in report.sources.items()}
    assert erased == {"customers": 1, "transactions": 2, "marketing": 1}
    assert report.reconciled and all(
        s.read == s.accepted + s.quarantined + s.duplicates + s.erased for s in report.sources.values()
    )
    assert list(catalog.read_profile(ws)["customer_id"]) == ["C2"]
    assert catalog.read_identity(ws, "links")["customer_id"].eq("C2").all()
    assert scan_workspace(ws.root, {"ann.lee@example.com", "7946 0001", "LC-0001"}) == {}
    for table in (ws.root / catalog.VERSIONS_DIR).rglob("*.parquet"):
        ids = pq.read_table(table).to_pydict().get("customer_id", [])
        assert "C1" not in ids, table


def test_a_request_for_nobody_erases_nothing_and_counts_it_not_found(ws, write_raw, transactions, now):
    from features.ingest import ingest

    write_raw("transactions", transactions)
    ingest(ws, now=now)

    entry = erasure.forget(ws, erasure.Request(identifiers={"email": ["nobody@example.org"], "phone": ["0"]}))

    assert (entry.customers, entry.not_found, entry.tombstones) == (0, 2, 0)
    assert sum(n for counts in entry.removed.values() for n in counts.values()) == 0
    assert len(catalog.read_canonical(ws, "transactions")) == 3


def test_an_empty_identifier_is_refused_before_anything_is_written(ws):
    with pytest.raises(erasure.ErasureError, match="empty or unusable email"):
        erasure.forget(ws, erasure.Request(identifiers={"email": ["  "]}))
    assert not (ws.erasure_dir / erasure.TOMBSTONES_FILE).exists() and erasure.read_audit(ws) == []


# --- the world ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(trained_world, copy_workspace, tmp_path_factory):
    """The trained world with everything a customer leaves behind, then ``forget`` run with a server up."""
    from features.store import materialize_latest
    from features.decision_log import DecisionLog
    from training.scoring import score_workspace

    trained, _ = trained_world
    base = tmp_path_factory.mktemp("erasure")
    ws = copy_workspace(trained.ws, base / "ws")
    materialize_latest(ws, end=trained.features_as_of)
    ensure_champions(ws)
    scores = ws.reports_dir / "scores-2026-11-01.parquet"
    score_workspace(ws, None, scores)
    pd.read_parquet(scores).to_csv(ws.reports_dir / "export.csv", index=False)
    originals = base / "originals"
    shutil.copytree(ws.raw_dir, originals)
    raw = _raw_frames(originals)

    profile = catalog.read_profile(ws)
    emails, phones = owners(raw, "email"), owners(raw, "phone")
    customers = catalog.read_canonical(ws, "customers").dropna(subset=["email", "phone"])
    customers = customers[
        normalise_identifiers(customers[["email"]])["email"].map(emails).eq(1).to_numpy()
        & normalise_identifiers(customers[["phone"]])["phone"].map(phones).eq(1).to_numpy()
    ]
    in_example = sorted(example_owners(ws) & set(customers["customer_id"]))
    by_id = [in_example[0], *[c for c in customers["customer_id"].iloc[::97] if c != in_example[0]][:2]]
    by_email = customers[~customers["customer_id"].isin(by_id)].iloc[5]
    kept = customers[~customers["customer_id"].isin([*by_id, by_email["customer_id"]])].iloc[7]
    erased = {*by_id, by_email["customer_id"]}
    assert erased <= set(profile["customer_id"])

    server = start_server(ws, base / "server.log", workers=1)
    try:
        with server.client() as client:
            before = client.post("/predict", json={"customer_ids": [by_id[1], kept["customer_id"]]}).json()
            for customer in [*erased, kept["customer_id"]]:
                assert (
                    client.post("/events", json={"customer_id": customer, "event_type": "search"}).status_code
                    == 200
                )
            decided = client.post("/decide", json={"customer_ids": sorted(erased | {kept["customer_id"]})})
            assert decided.status_code == 200
        log = DecisionLog.of(ws)
        at = datetime.now(UTC)
        log.record_decisions([{"decision_id": f"d-erasure-{i}", "customer_id": c, "at": at, "holdout": False,
                               "actions": [{"action": "retention_offer"}], "models": {}}
                              for i, c in enumerate([by_id[0], kept["customer_id"]])])  # fmt: skip
        log.record_outcome("d-erasure-0", "retention_offer", "clicked", at)
        log.record_outcome("d-erasure-1", "retention_offer", "clicked", at)
        log.close()

        entry = erasure.forget(ws, erasure.Request(identifiers={
            "customer_id": [f"  {by_id[0]} ", *by_id[1:]], "email": [by_email["email"].upper()],
            "phone": ["+00 0000 000000"]}), actor="dpo@example")  # fmt: skip

        with server.client() as client:
            after = client.post("/predict", json={"customer_ids": [by_id[1], kept["customer_id"]]}).json()
        needles = _needles({"raw": raw, "erased": erased})
        scanned = scan_workspace(ws.root, needles | {kept["customer_id"]})
        found = {path: hits - {kept["customer_id"].lower()} for path, hits in scanned.items()}
        found = {path: hits for path, hits in found.items() if hits}
        kept_in = {path for path, hits in scanned.items() if kept["customer_id"].lower() in hits}
        with server.client() as client:
            cold_before = _cold_starts(client)
            decided = client.post("/decide", json={"customer_ids": [by_id[1]]})
            cold_after = _cold_starts(client)
            pushed = client.post("/events", json={"customer_id": by_id[1], "event_type": "search"})
        rescanned = scan_workspace(ws.root, {by_id[1].lower()})
    finally:
        server.stop()
    return {"ws": ws, "originals": originals, "raw": raw, "erased": erased, "kept": kept["customer_id"],
            "by_id": by_id, "entry": entry, "before": before, "after": after, "needles": needles, "found": found,
            "kept_in": kept_in, "decided": decided, "cold_starts": (cold_before, cold_after), "pushed": pushed,
            "rescanned": rescanned}  # fmt: skip


def _cold_starts(client) -> float:
    """The service's count of churn blocks answered as cold starts (its Prometheus counter)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('cxpredict_predictions_total{outcome="cold_start",task="churn"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _needles(world) -> set[str]:
    found = identifiers_of(world["raw"], world["erased"])
    return world["erased"] | found["normalised"] | found["spellings"]


# --- the tests -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_after_forget_no_file_of_the_workspace_holds_the_customers_but_others_remain(world):
    # given customers forgotten by id (one padded with spaces) and by email (in another case), with
    # their ids, emails and phones all in the raw files before
    assert len(world["needles"]) > len(world["erased"]) * 2

    # when every file of the workspace was scanned (right after forget, the server still up)
    found, kept = world["found"], world["kept_in"]

    # then none of their identifiers is anywhere, while a customer not forgotten still is, everywhere
    assert found == {}
    assert any(path.startswith("raw/") for path in kept)
    assert any(path.startswith(catalog.VERSIONS_DIR) for path in kept)
    assert any("online_store.db" in path for path in kept)
    assert any(path.startswith("events/") for path in kept) and any(
        path.startswith("decisions/") for path in kept
    )
    assert any(path.startswith("reports/") for path in kept)
    assert any(path.startswith("features/") for path in kept) and any(
        path.startswith("truth/") for path in kept
    )


@pytest.mark.slow
def test_every_place_reports_what_it_removed(world):
    removed = world["entry"].removed
    assert list(removed) == list(erasure.PLACES)
    assert removed["raw"]["rows"] > 0 and removed["canonical"]["versions"] >= 1
    assert removed["canonical"]["profile_rows"] == len(world["erased"])
    assert removed["canonical"]["identity_links"] >= len(world["erased"])
    assert removed["features"]["rows"] > 0 and removed["online_store"]["customers"] == len(world["erased"])
    assert removed["event_log"]["rows"] == len(world["erased"])
    assert (
        removed["decision_log"]["decisions"] >= len(world["erased"])
        and removed["decision_log"]["outcomes"] == 1
    )
    assert removed["scores"]["rows"] > 0 and removed["scores"]["files_rewritten"] >= 2
    assert removed["mlflow"]["example_rows"] >= 1
    assert world["entry"].customers == len(world["erased"]) and world["entry"].not_found == 1


@pytest.mark.slow
def test_the_canonical_tables_still_agree_with_each_other(world):
    ws = world["ws"]
    manifest = catalog.canonical_manifest(ws)
    links = catalog.read_identity(ws, "links")
    assert manifest.profile_rows == len(catalog.read_profile(ws))
    assert manifest.identity_links == len(links)
    assert not links["customer_id"].isin(world["erased"]).any()
    assert manifest.sources["transactions"].rows == len(catalog.read_canonical(ws, "transactions"))


@pytest.mark.slow
def test_a_running_server_treats_an_erased_customer_as_unknown_without_restart(world):
    erased_before, kept_before = world["before"]["predictions"]
    erased_after, kept_after = world["after"]["predictions"]
    assert erased_before["cold_start"] is False and kept_before["cold_start"] is False
    assert erased_after["cold_start"] is True and erased_after["features_as_of"] is None
    assert kept_after["cold_start"] is False
    # and /decide answers them unscored, with no decision logged, and /events refuses them
    assert world["decided"].status_code == 200
    (decision,) = world["decided"].json()["decisions"]
    assert decision["customer_id"] == world["by_id"][1] and decision["decision_id"] is None
    assert decision["scored"] is False and decision["reason"] == "erased on request"
    assert world["pushed"].status_code == 410 and world["pushed"].json()["field"] == "customer_id"
    assert not any(world["rescanned"].values()), "nothing the server was asked after forget brought them back"
    before, after = world["cold_starts"]
    assert after - before == 1


@pytest.mark.slow
def test_reingesting_the_original_files_brings_nobody_back_and_counts_them_as_erased(
    world, copy_workspace, tmp_path
):
    from features.ingest import ingest

    # given a copy of the erased workspace and the raw files as they were before forget
    ws = copy_workspace(world["ws"], tmp_path / "ws")
    paths = {path.stem: path for path in sorted(world["originals"].glob("*.*"))}

    # when they are ingested again
    report = ingest(ws, paths)

    # then their rows are counted as erased, the books balance, and none of them is back
    for source in report.sources.values():
        assert source.read == source.accepted + source.quarantined + source.duplicates + source.erased
    assert (
        report.reconciled
        and sum(s.erased for s in report.sources.values()) == world["entry"].removed["raw"]["rows"]
    )
    assert report.sources["transactions"].erased > 0 and report.sources["customers"].erased >= len(
        world["erased"]
    )
    assert not catalog.read_profile(ws)["customer_id"].isin(world["erased"]).any()
    found = scan_workspace(ws.root / catalog.VERSIONS_DIR, _needles(world))
    assert found == {}


@pytest.mark.slow
def test_score_after_erasure_does_not_know_them(world, tmp_path):
    from training.scoring import score_workspace

    out = tmp_path / "scores.parquet"
    score_workspace(world["ws"], None, out)
    scored = pd.read_parquet(out)
    assert not scored["customer_id"].isin(world["erased"]).any() and world["kept"] in set(
        scored["customer_id"]
    )


@pytest.mark.slow
def test_the_audit_holds_one_entry_per_request_with_a_hashed_subject_and_no_identifier(world):
    ws = world["ws"]
    entries = erasure.read_audit(ws)
    assert len(entries) == 1 and entries[0].subject == world["entry"].subject
    assert entries[0].actor == "dpo@example" and entries[0].total > 0
    text = (ws.erasure_dir / erasure.AUDIT_FILE).read_text() + (
        ws.erasure_dir / erasure.TOMBSTONES_FILE
    ).read_text()
    assert not {n for n in _needles(world) if n.lower() in text.lower()}
    assert len(entries[0].subject) == 64 and int(entries[0].subject, 16) >= 0
    assert erasure.pending(ws) == []


@pytest.mark.slow
def test_the_tombstones_hold_a_salted_digest_of_each_erased_id_and_identifier(world):
    ws = world["ws"]
    salt = erasure.workspace_salt(ws, create=False)
    stones = erasure.read_tombstones(ws)
    assert {erasure.digest(salt, "customer_id", c) for c in world["erased"]} <= stones["customer_id"]
    emails = identifiers_of(world["raw"], world["erased"])["normalised"]
    assert {erasure.digest(salt, "email", e) for e in emails if "@" in e} <= stones["email"]
    assert erasure.digest(b"another salt", "customer_id", world["by_id"][0]) not in stones["customer_id"]


def test_the_spelled_out_entity_key_prefix_is_feasts():
    from features.online import EntityKeyEncoder

    assert erasure.ENTITY_KEY_PREFIX == EntityKeyEncoder("customer_id", 3).prefix


def test_the_log_locations_are_the_ones_the_logs_use(tmp_path):
    from features import event_log
    from features import decision_log

    ws = Workspace(root=tmp_path)
    assert erasure._log_url(ws, erasure.EVENT_LOG) == event_log.log_url(ws)
    assert erasure._log_url(ws, erasure.DECISION_LOG) == decision_log.log_url(ws)
    assert (erasure.EVENT_LOG[0], erasure.EVENT_LOG[2]) == (event_log.LOG_URL_ENV, event_log.EVENTS.name)
    assert (erasure.DECISION_LOG[0], erasure.DECISION_LOG[2], erasure.DECISION_LOG[3]) == (
        decision_log.LOG_URL_ENV, decision_log.DECISIONS.name, decision_log.RESULTS.name)  # fmt: skip


@pytest.mark.services
def test_given_the_redis_online_store_forget_deletes_the_customers_keys_and_no_other(tmp_path):
    import uuid

    import redis
    from store_fixtures import SNAPSHOTS, write_world

    from features import store as feature_store
    from features.feature_repo.definitions import RepoSettings
    from features.online import OnlineReader

    # given a world materialised into the real Redis under a project of its own
    client = redis.Redis(host="127.0.0.1", port=6379)
    project = f"cxp_erasure_{uuid.uuid4().hex[:12]}"
    settings = RepoSettings(online_store="redis", redis_connection_string="127.0.0.1:6379", project=project)
    ws = Workspace(root=tmp_path / "ws")
    write_world(ws.root, n_customers=25)
    feature_store.apply_repo(ws, settings)
    try:
        feature_store.materialize_latest(ws, end=SNAPSHOTS[-1], settings=settings)
        before = len(list(client.scan_iter(match=b"*" + project.encode())))
        ids = ["C000003", "C000004", "C000011"]
        known = OnlineReader(feature_store.open_store(ws, settings)).read(ids, "churn", SNAPSHOTS[-1])

        # when two customers are forgotten
        entry = erasure.forget(ws, erasure.Request(identifiers={"customer_id": ["C000003", "C000011"]}),
                               settings=settings)  # fmt: skip

        # then exactly their keys are gone, and the online read no longer knows them
        after = len(list(client.scan_iter(match=b"*" + project.encode())))
        assert (before, after) == (25, 23) and entry.removed["online_store"] == {"keys": 2, "customers": 2}
        store = feature_store.open_store(ws, settings)
        read = OnlineReader(store).read(ids, "churn", SNAPSHOTS[-1])
        features = [name for name in read if name != "customer_id"]
        assert all(any(known[name][i] is not None for name in features) for i in range(3))
        assert all(read[name][0] is None and read[name][2] is None for name in features)
        assert all(read[name][1] == known[name][1] for name in features)
        assert entry.removed["features"]["rows"] > 0
    finally:
        feature_store.open_store(ws, settings).teardown()
        leftover = list(client.scan_iter(match=b"*" + project.encode() + b"*"))  # with the snapshot state
        if leftover:
            client.delete(*leftover)
        client.close()


@pytest.mark.services
def test_given_postgresql_logs_forget_deletes_the_customers_events_decisions_and_outcomes(
    tmp_path, monkeypatch
):
    from features.event_log import EventLog, RealtimeEvent
    from features.decision_log import DecisionLog
    from tests.postgres import fresh_database

    # given event and decision logs on a fresh PostgreSQL database, holding two customers
    with fresh_database("cxp_erasure") as url:
        monkeypatch.setenv(erasure.EVENT_LOG[0], url)
        monkeypatch.setenv(erasure.DECISION_LOG[0], url)
        ws = Workspace(root=tmp_path / "ws")
        at = datetime(2026, 11, 1, tzinfo=UTC)
        events, decisions = EventLog(url), DecisionLog(url)
        for customer in ("C1", "C2"):
            events.append(RealtimeEvent(customer_id=customer, event_type="search", timestamp=at))
        decisions.record_decisions([{"decision_id": f"d-{c}", "customer_id": c, "at": at, "holdout": False,
                                     "actions": [{"action": "retention_offer"}], "models": {}} for c in ("C1", "C2")])  # fmt: skip
        for customer in ("C1", "C2"):
            decisions.record_outcome(f"d-{customer}", "retention_offer", "clicked", at)

        # when C1 is forgotten
        entry = erasure.forget(ws, erasure.Request(identifiers={"customer_id": ["C1"]}))

        # then C1's rows are gone from both logs and C2's are all there
        assert entry.removed["event_log"] == {"rows": 1}
        assert entry.removed["decision_log"] == {"decisions": 1, "outcomes": 1}
        assert list(events.events(["C1", "C2"])) == ["C2"] and events.count() == 1
        assert decisions.counts() == {"decisions": 1, "holdout_decisions": 0, "outcomes": 1}
        events.close()
        decisions.close()


def test_given_a_feature_refresh_in_progress_then_forget_waits_for_it_and_nothing_of_the_customer_is_left(
    ws, write_raw, transactions, customers, now, monkeypatch
):
    import threading

    from features import store
    from features.ingest import ingest

    # given an ingested workspace with its features online, and a refresh that has built its snapshots
    write_raw("transactions", transactions)
    write_raw("customers", customers)
    ingest(ws, now=now)
    store.refresh_features(ws, now)
    built, release, materialize = threading.Event(), threading.Event(), store.materialize_latest

    def paused(*args, **kwargs):
        built.set()
        release.wait(30)
        return materialize(*args, **kwargs)

    monkeypatch.setattr(store, "materialize_latest", paused)
    refresh = threading.Thread(target=store.refresh_features, args=(ws, now))
    refresh.start()
    assert built.wait(60)

    # when C1 is forgotten while the refresh is still writing
    erase = threading.Thread(
        target=erasure.forget, args=(ws, erasure.Request(identifiers={"customer_id": ["C1"]}))
    )
    erase.start()
    erase.join(timeout=2)
    waited = erase.is_alive()
    release.set()
    refresh.join(60)
    erase.join(120)

    # then the erasure waited for the refresh, and neither the snapshots nor the online store hold C1
    assert waited and not erase.is_alive() and not refresh.is_alive()
    assert erasure.read_audit(ws)[-1].customers == 1
    for table in ws.features_dir.rglob("*.parquet"):
        assert "C1" not in pq.read_table(table).to_pydict().get("customer_id", []), table
    online = (
        store.open_store(ws)
        .get_online_features(
            features=["profile:profile_region"], entity_rows=[{"customer_id": "C1"}, {"customer_id": "C2"}]
        )
        .to_dict()["profile_region"]
    )
    assert online == [None, "south"]
