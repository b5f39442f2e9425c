"""The decision and outcome log: what was decided for whom, and what came back.

Why durable and append-only: impact is measured against the holdout and policies are evaluated
off-policy from this log, so a decision the service answered must exist here even if the server
dies right after (a commit before the answer, as for events: ``features.event_log.durable_engine``),
and an outcome reported twice must count once (idempotent per decision, action and outcome).
SQLite in the workspace by default (``<workspace>/decisions/decisions.db``); any SQLAlchemy URL in
``CXPREDICT_DECISION_LOG_URL`` (PostgreSQL for several hosts).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pandas as pd
from sqlalchemy import BigInteger, Boolean, Column, Float, Index, MetaData, String, Table, Text, select

from cxpredict.workspace import Workspace
from features.event_log import create_tables, dialect_insert, durable_engine

LOG_URL_ENV = "CXPREDICT_DECISION_LOG_URL"
CONTROL = "control"
"""The arm of a decision that gave no action (a holdout customer, or ``no_action`` chosen)."""
NO_ACTION = "no_action"
OUTCOMES = ("delivered", "opened", "clicked", "accepted", "converted", "rejected", "unsubscribed")
ACCEPTED = frozenset({"accepted", "converted"})
REJECTED = frozenset({"rejected", "unsubscribed"})
OFFER_WINDOW = timedelta(days=30)

_METADATA = MetaData()
DECISIONS = Table(
    "cx_decisions",
    _METADATA,
    Column("decision_id", String(64), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("at_us", BigInteger, nullable=False),
    Column("holdout", Boolean, nullable=False),
    Column("actions", Text, nullable=False),
    Column("models", Text, nullable=False),
    Index("cx_decisions_customer_at", "customer_id", "at_us"),
)
RESULTS = Table(
    "cx_outcomes",
    _METADATA,
    Column("decision_id", String(64), primary_key=True),
    Column("action", String(64), primary_key=True),
    Column("outcome", String(16), primary_key=True),
    Column("at_us", BigInteger, nullable=False),
    Column("revenue", Float),
)


def _micros(moment: datetime) -> int:
    return int(round(moment.astimezone(UTC).timestamp() * 1_000_000))


class UnknownDecision(LookupError):
    """An outcome for a decision id the log does not hold."""


class ActionNotDecided(ValueError):
    """An outcome for an action the decision did not choose."""


@dataclass(frozen=True)
class Contact:
    """An action decided for a customer at a moment (what caps and cooldowns count)."""

    action: str
    at: datetime


@dataclass(frozen=True)
class Recorded:
    duplicate: bool
    customer_id: str


@dataclass(frozen=True)
class ReportedOutcome:
    """One outcome as the log holds it, with the decision's customer."""

    customer_id: str
    decision_id: str
    action: str
    outcome: str
    at_s: float


def offer_counts(outcomes: list[ReportedOutcome], now: datetime) -> dict[str, float | None]:
    """One customer's offer features at ``now`` (``features.feature_repo.definitions.OFFER_FEATURES``).

    A decided action counts once per kind however many outcomes it got: received at its first
    reported outcome (every outcome implies delivery), accepted at its first accepted or converted,
    rejected at its first rejected or unsubscribed, each when that time is in the 30 days up to
    ``now``. Outcomes after ``now`` are not seen, so the counts at a past moment are point in time."""
    now_s = now.timestamp()
    start_s = now_s - OFFER_WINDOW.total_seconds()
    first: dict[tuple[str, str, str], float] = {}
    last = None
    for o in outcomes:
        if o.at_s > now_s:
            continue
        last = o.at_s if last is None else max(last, o.at_s)
        kinds = ["received"] + ["accepted"] * (o.outcome in ACCEPTED) + ["rejected"] * (o.outcome in REJECTED)
        for kind in kinds:
            key = (o.decision_id, o.action, kind)
            first[key] = min(first.get(key, o.at_s), o.at_s)
    counted = dict.fromkeys(("received", "accepted", "rejected"), 0.0)
    for (_, _, kind), at_s in first.items():
        if at_s > start_s:
            counted[kind] += 1.0
    return {
        "offers_received_30d": counted["received"],
        "offers_accepted_30d": counted["accepted"],
        "offers_rejected_30d": counted["rejected"],
        "offers_last_outcome_ts": last,
        "offers_counted_at_ts": now_s,
    }


def log_url(ws: Workspace) -> str:
    return os.environ.get(LOG_URL_ENV) or f"sqlite:///{(ws.root / 'decisions' / 'decisions.db').as_posix()}"


class DecisionLog:
    """Decisions and outcomes; safe to share between processes."""

    def __init__(self, url: str) -> None:
        self.engine = durable_engine(url)
        self._sqlite_path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
        self._local = threading.local()
        create_tables(self.engine, _METADATA)
        self._insert = dialect_insert(self.engine)

    @classmethod
    def of(cls, ws: Workspace) -> DecisionLog:
        return cls(log_url(ws))

    def record_decisions(self, rows: list[dict]) -> None:
        """Commit decisions (durable when this returns): dicts with decision_id, customer_id, at,
        holdout, actions (the chosen actions, as answered), optionally withheld (a holdout
        customer's actions the policy would have chosen, stored flagged ``withheld``) and models
        (name/version per task)."""
        if not rows:
            return
        with self.engine.begin() as connection:
            connection.execute(DECISIONS.insert(), self._decision_values(rows))

    @staticmethod
    def _decision_values(rows: list[dict]) -> list[dict]:
        return [
            {
                "decision_id": row["decision_id"],
                "customer_id": row["customer_id"],
                "at_us": _micros(row["at"]),
                "holdout": row["holdout"],
                "actions": json.dumps(
                    [*row["actions"], *({**a, "withheld": True} for a in row.get("withheld", ()))],
                    separators=(",", ":"),
                ),
                "models": json.dumps(row["models"], separators=(",", ":")),
            }
            for row in rows
        ]

    def import_history(self, decisions: list[dict], outcomes: list[dict]) -> None:
        """Append a decision history made elsewhere (a generated world's past campaigns, a migration)
        in one transaction: ``decisions`` as for :meth:`record_decisions`, ``outcomes`` as dicts with
        decision_id, action, outcome, at and revenue (the caller vouches that each names a decided
        action); an outcome already present is kept once."""
        values = [
            {
                "decision_id": row["decision_id"],
                "action": row["action"],
                "outcome": row["outcome"],
                "at_us": _micros(row["at"]),
                "revenue": row.get("revenue"),
            }
            for row in outcomes
        ]
        with self.engine.begin() as connection:
            if decisions:
                connection.execute(DECISIONS.insert(), self._decision_values(decisions))
            if values:
                statement = self._insert(RESULTS).on_conflict_do_nothing(
                    index_elements=["decision_id", "action", "outcome"]
                )
                connection.execute(statement, values)

    def treatments(self, until: datetime | None = None) -> pd.DataFrame:
        """One row per decision made before ``until``: decision_id, customer_id, timestamp, ``arm``
        (the first action given, the one ranked highest; ``control`` for a holdout decision or one
        with no action) and its ``propensity`` (null for control). What uplift is learned from."""
        query = select(DECISIONS.c.decision_id, DECISIONS.c.customer_id, DECISIONS.c.at_us,
                       DECISIONS.c.holdout, DECISIONS.c.actions)  # fmt: skip
        if until is not None:
            query = query.where(DECISIONS.c.at_us < _micros(until))
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        arms, propensities = [], []
        for _, _, _, holdout, actions in rows:
            given = [a for a in json.loads(actions) if not a.get("withheld")]
            first = given[0] if given and not holdout else None
            arms.append(CONTROL if first is None or first["action"] == NO_ACTION else first["action"])
            propensities.append(None if first is None else first.get("propensity"))
        return pd.DataFrame(
            {
                "decision_id": pd.Series([r[0] for r in rows], dtype=object),
                "customer_id": pd.Series([r[1] for r in rows], dtype=object),
                "timestamp": pd.to_datetime([r[2] for r in rows], unit="us", utc=True),
                "arm": pd.Series(arms, dtype=object),
                "propensity": pd.to_numeric(pd.Series(propensities, dtype=object), errors="coerce"),
            }
        )

    def contacts(self, customer_ids: list[str], since: datetime) -> dict[str, list[Contact]]:
        """Actions decided for these customers since ``since`` (what caps and cooldowns count).

        On SQLite this is the per-request read of ``/decide``, so it runs one plain statement on a
        per-thread read-only connection (SQLAlchemy's per-call overhead is most of the cost)."""
        ids = list(dict.fromkeys(customer_ids))
        if self._sqlite_path is not None:
            cursor = self._reader().execute(
                f"SELECT customer_id, at_us, actions FROM {DECISIONS.name} "
                f"WHERE customer_id IN ({','.join('?' * len(ids))}) AND at_us >= ?",
                [*ids, _micros(since)],
            )
            rows = cursor.fetchall()
        else:
            query = select(DECISIONS.c.customer_id, DECISIONS.c.at_us, DECISIONS.c.actions).where(
                DECISIONS.c.customer_id.in_(ids), DECISIONS.c.at_us >= _micros(since)
            )
            with self.engine.connect() as connection:
                rows = connection.execute(query).all()
        found: dict[str, list[Contact]] = {}
        for customer_id, at_us, actions in rows:
            at = datetime.fromtimestamp(at_us / 1_000_000, UTC)
            for action in json.loads(actions):
                if not action.get("withheld"):
                    found.setdefault(customer_id, []).append(Contact(action["action"], at))
        return found

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection; every read fetches all its rows, so no read
        transaction stays open between requests (each sees every commit before it)."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(f"file:{quote(self._sqlite_path)}?mode=ro", uri=True)
            self._local.connection = connection
        return connection

    def record_outcome(
        self, decision_id: str, action: str, outcome: str, at: datetime, revenue: float | None = None
    ) -> Recorded:
        """Commit an outcome of a decided action; once per (decision, action, outcome)."""
        with self.engine.begin() as connection:
            found = connection.execute(
                select(DECISIONS.c.customer_id, DECISIONS.c.actions).where(
                    DECISIONS.c.decision_id == decision_id
                )
            ).one_or_none()
            if found is None:
                raise UnknownDecision(decision_id)
            customer_id, actions = found
            if action not in {a["action"] for a in json.loads(actions) if not a.get("withheld")}:
                raise ActionNotDecided(action)
            statement = self._insert(RESULTS).on_conflict_do_nothing(
                index_elements=["decision_id", "action", "outcome"]
            )
            inserted = connection.execute(
                statement,
                {
                    "decision_id": decision_id,
                    "action": action,
                    "outcome": outcome,
                    "at_us": _micros(at),
                    "revenue": revenue,
                },
            ).rowcount
        return Recorded(duplicate=inserted != 1, customer_id=customer_id)

    def outcomes_of(self, customer_ids: list[str]) -> dict[str, list[ReportedOutcome]]:
        """Every outcome reported for these customers' decisions, by customer."""
        ids = list(dict.fromkeys(customer_ids))
        found: dict[str, list[ReportedOutcome]] = {}
        with self.engine.connect() as connection:
            for offset in range(0, len(ids), 5_000):
                query = (
                    select(
                        DECISIONS.c.customer_id,
                        RESULTS.c.decision_id,
                        RESULTS.c.action,
                        RESULTS.c.outcome,
                        RESULTS.c.at_us,
                    )
                    .select_from(RESULTS.join(DECISIONS, RESULTS.c.decision_id == DECISIONS.c.decision_id))
                    .where(DECISIONS.c.customer_id.in_(ids[offset : offset + 5_000]))
                )
                for customer_id, decision_id, action, outcome, at_us in connection.execute(query):
                    found.setdefault(customer_id, []).append(
                        ReportedOutcome(customer_id, decision_id, action, outcome, at_us / 1_000_000)
                    )
        return found

    def customers_with_outcomes(self, since: datetime) -> list[str]:
        """Customers with an outcome reported at or after ``since``."""
        query = (
            select(DECISIONS.c.customer_id)
            .distinct()
            .select_from(RESULTS.join(DECISIONS, RESULTS.c.decision_id == DECISIONS.c.decision_id))
            .where(RESULTS.c.at_us >= _micros(since))
        )
        with self.engine.connect() as connection:
            return sorted(customer_id for (customer_id,) in connection.execute(query))

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(DECISIONS.c.holdout)).all()
            outcomes = connection.execute(select(RESULTS.c.outcome)).all()
        return {
            "decisions": len(rows),
            "holdout_decisions": sum(1 for (held,) in rows if held),
            "outcomes": len(outcomes),
        }

    def decisions(self, since: datetime | None = None) -> list[dict]:
        """Every decision (since ``since``): decision_id, customer_id, at, holdout, actions given and
        actions withheld (holdout), as stored."""
        query = select(DECISIONS.c.decision_id, DECISIONS.c.customer_id, DECISIONS.c.at_us,
                       DECISIONS.c.holdout, DECISIONS.c.actions)  # fmt: skip
        if since is not None:
            query = query.where(DECISIONS.c.at_us >= _micros(since))
        out = []
        with self.engine.connect() as connection:
            for decision_id, customer_id, at_us, holdout, actions in connection.execute(query):
                chosen = json.loads(actions)
                out.append(
                    {
                        "decision_id": decision_id,
                        "customer_id": customer_id,
                        "at": datetime.fromtimestamp(at_us / 1_000_000, UTC),
                        "holdout": bool(holdout),
                        "actions": [a["action"] for a in chosen if not a.get("withheld")],
                        "withheld": [a["action"] for a in chosen if a.get("withheld")],
                    }
                )
        return out

    def outcome_counts(self, since: datetime | None = None) -> dict[str, int]:
        """Outcomes by kind (of decisions since ``since``)."""
        query = select(RESULTS.c.outcome).select_from(
            RESULTS.join(DECISIONS, RESULTS.c.decision_id == DECISIONS.c.decision_id)
        )
        if since is not None:
            query = query.where(DECISIONS.c.at_us >= _micros(since))
        counted: dict[str, int] = {}
        with self.engine.connect() as connection:
            for (outcome,) in connection.execute(query):
                counted[outcome] = counted.get(outcome, 0) + 1
        return counted

    def close(self) -> None:
        self.engine.dispose()
