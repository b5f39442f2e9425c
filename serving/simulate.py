"""``cxpredict simulate``: the closed loop on a generated world, day by day.

Why: a decision policy is judged by what it changes, and only a world whose truth is known can say
how far a policy is from the best one. Here every part runs as in production — ingestion, Feast
features, training, the promotion gate, the decisions of ``/decide``, the decision log, outcomes,
``retrain`` — only the clock and the customers are simulated.

The loop. A world is generated, with its past campaigns, whose last ``days`` days are the
simulation; the workspace first sees only what happened before them. It ingests that, builds the
features, trains the tasks the catalogue reads (:func:`decision_tasks`, with the task of the score
risk targeting ranks by) and promotes them through the gate. Then,
day by day:

- the day's triggers — a customer starting a web session or opening the app, or opening a support
  ticket (their first of the day) — ask for a decision at the trigger's time, through the code of
  ``/decide`` (the champions' predictions from the online store; the catalogue's rules, contact caps
  and cooldowns against the decision log; the holdout), one action per decision; each decision is
  logged. The catalogue prices every action by the purchases it causes
  (:func:`purchase_catalogue`) unless another is given;
- the world responds to a decided action by its true effects, as in the past campaigns
  (:mod:`features.synthetic.campaign_history`): a customer who would not have bought within the
  horizon is persuaded at the action's true rate (one extra purchase), one who would have is put
  off at its put-off rate (the horizon's purchases disappear); outcomes (delivered, opened,
  converted) are posted to the decision log on the day they happen;
- every ``refresh_every_days`` the days since are revealed (raw files), ingested and the features
  rebuilt and materialised; every ``retrain_every_days`` ``retrain`` runs instead (train what
  changed, gate, promote), so the models learn from the loop's own decisions.

What the world does without any action is the generator's, drawn for the whole window up front;
an action changes purchases within its horizon only (churn, browsing and service follow the
baseline).

The end: the impact report (treated against the holdout, measured from transactions) and the value
of four policies on the same decisions — the purchases within the horizon a policy causes per
decision, from the truth: the mean true uplift of the actions it takes (none: 0; what every policy
shares, the purchases that happen anyway, is left out, so intervals compare policies, not
customers). ``ours``: what
the service decided (for a holdout decision, the action it withheld); ``random``: as many actions,
to decisions drawn at random, each a random action the customer consented to; ``risk_targeting``:
as many retention offers, to the highest scores of the retention action's driver (the churn
probability in the shipped catalogue) among customers with marketing consent;
``oracle``: as many actions, to the decisions with the largest true uplift, each its best consented
action. Intervals: percentile bootstrap over decisions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from cxpredict import tasks as registry
from cxpredict.progress import Progress, silent
from cxpredict.workspace import Workspace

SESSION_CHANNEL = {"session_start": "web", "app_open": "app"}
POLICIES = ("ours", "random", "risk_targeting", "oracle")
GAP_BAR = 0.6
"""Share of the way from random targeting to the oracle's value our policy must cover."""
_STREAM = 0x51A


class SimulateConfig(BaseModel):
    """One simulation: the world (size, seed, last day) and the loop's schedule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    days: int = Field(60, ge=7, le=365)
    customers: int = Field(5_000, ge=500)
    seed: int = 1
    end: date = Field(default_factory=lambda: datetime.now().date())
    """Exclusive last day of the world: the simulation covers ``end - days`` … ``end - 1``."""
    history_days: int = Field(730, ge=365)
    """The world's window before and including the simulated days."""
    refresh_every_days: int = Field(7, ge=1)
    retrain_every_days: int = Field(30, ge=1)
    bootstrap: int = Field(1_000, ge=100)
    catalogue: Path | None = None
    """An action catalogue to decide with instead of :func:`purchase_catalogue`."""

    @property
    def start_at(self) -> pd.Timestamp:
        return pd.Timestamp(self.end, tz="UTC") - pd.Timedelta(days=self.days)


class PolicyValue(BaseModel):
    """A policy's value: purchases it causes per decision (mean true uplift of its actions)."""

    name: str
    value: float
    ci_low: float
    ci_high: float
    actions: int


class SimulationReport(BaseModel):
    """What the loop did and how well it decided (counts and aggregates only: no customer id)."""

    days: int
    customers: int
    seed: int
    start: str
    end: str
    triggers: int = 0
    decisions: int = 0
    holdout_decisions: int = 0
    actions: dict[str, int] = Field(default_factory=dict)
    uplift_source: dict[str, int] = Field(default_factory=dict)
    persuaded: int = 0
    put_off: int = 0
    outcomes: int = 0
    refreshes: int = 0
    retrains: list[dict] = Field(default_factory=list)
    policies: list[PolicyValue] = Field(default_factory=list)
    purchase_without_action: float | None = None
    """The decisions' mean probability of a purchase within the horizon without any action."""
    gap_closed: float | None = None
    """(ours − random) / (oracle − random)."""
    bar: dict[str, bool] = Field(default_factory=dict)
    impact: dict = Field(default_factory=dict)
    report: str | None = None
    seconds: dict[str, float] = Field(default_factory=dict)


@dataclass
class _Pending:
    """Outcomes decided today that happen later (posted on their day)."""

    outcomes: list[tuple[pd.Timestamp, str, str, str, float | None]] = field(default_factory=list)

    def due(self, before: pd.Timestamp) -> list[tuple[pd.Timestamp, str, str, str, float | None]]:
        now = [o for o in self.outcomes if o[0] < before]
        self.outcomes = [o for o in self.outcomes if o[0] >= before]
        return sorted(now, key=lambda o: (o[0], o[1], o[3]))


class HiddenWorld:
    """The generated raw files, shown to the workspace up to a moment; transactions change as the
    world responds to actions (extra purchases added, put-off orders removed)."""

    def __init__(self, ws: Workspace) -> None:
        from features.synthetic.raw import SCHEMAS, time_column

        self.ws, self.schemas = ws, SCHEMAS
        self.frames = {s: pq.read_table(ws.raw_dir / f"{s}.parquet").to_pandas() for s in SCHEMAS}
        self.times = {
            s: pd.to_datetime(frame[time_column(s)], utc=True, errors="coerce", format="ISO8601")
            for s, frame in self.frames.items()
        }
        self.added: list[dict] = []
        self.dropped: set[str] = set()

    def reveal(self, until: pd.Timestamp) -> None:
        """Write every raw file with the rows before ``until`` (rows whose time does not parse are
        shown from the start, so ingestion quarantines them as it would)."""
        for source, frame in self.frames.items():
            times = self.times[source]
            shown = frame.loc[(times < until) | times.isna()]
            if source == "transactions":
                shown = shown.loc[~shown["order_id"].isin(self.dropped)]
                extra = [row for row in self.added if pd.Timestamp(row["timestamp"]) < until]
                if extra:
                    shown = pd.concat([shown, pd.DataFrame(extra, columns=frame.columns)], ignore_index=True)
            table = pa.Table.from_pandas(shown, schema=self.schemas[source], preserve_index=False)
            scratch = self.ws.raw_dir / f"{source}.parquet.tmp"
            pq.write_table(table, scratch)
            scratch.replace(self.ws.raw_dir / f"{source}.parquet")

    def triggers(self, day: pd.Timestamp) -> pd.DataFrame:
        """The day's first trigger per customer: customer_id, at, channel (None for a ticket)."""
        end = day + pd.Timedelta(days=1)
        events, tickets = self.frames["events"], self.frames["support_tickets"]
        when = self.times["events"]
        sessions = events.loc[
            (when >= day)
            & (when < end)
            & events["event_type"].isin(list(SESSION_CHANNEL))
            & events["customer_id"].notna()
        ]
        opened = self.times["support_tickets"]
        calls = tickets.loc[(opened >= day) & (opened < end) & tickets["customer_id"].notna()]
        found = pd.concat(
            [
                pd.DataFrame(
                    {
                        "customer_id": sessions["customer_id"],
                        "at": when[sessions.index],
                        "channel": sessions["event_type"].map(SESSION_CHANNEL),
                    }
                ),  # fmt: skip
                pd.DataFrame(
                    {"customer_id": calls["customer_id"], "at": opened[calls.index], "channel": None}
                ),
            ],
            ignore_index=True,
        )
        found = found.sort_values(["customer_id", "at"], kind="stable").drop_duplicates("customer_id")
        return found.reset_index(drop=True)

    def purchases(self, owners: pd.Series, start: pd.Timestamp, end: pd.Timestamp) -> dict[str, list]:
        """Per customer, (time, order id) of their purchases in (start, end], as the world stands."""
        tx, when = self.frames["transactions"], self.times["transactions"]
        bought = (
            (tx["amount"] > 0) & ~tx["returned"].fillna(False).astype(bool) & (when > start) & (when <= end)
        )
        bought &= ~tx["order_id"].isin(self.dropped) & owners.notna()
        found: dict[str, list] = {}
        for owner, at, order in zip(owners[bought], when[bought], tx.loc[bought, "order_id"], strict=True):
            found.setdefault(owner, []).append((at, order))
        for row in self.added:
            at = pd.Timestamp(row["timestamp"])
            if start < at <= end:
                found.setdefault(row["customer_id"], []).append((at, row["order_id"]))
        return found


def _post(log, due: list) -> int:
    """Post outcomes to the decision log as ``/outcomes`` does; returns how many."""
    for at, decision_id, action, outcome, revenue in due:
        log.record_outcome(decision_id, action, outcome, at.to_pydatetime(), revenue)
    return len(due)


def purchase_catalogue(catalogue):
    """The catalogue the loop decides with by default: the shipped one's actions, channels, consent,
    cooldowns, contact caps, holdout and exploration, each success worth one purchase at no cost and
    no eligibility rule — so our policy ranks actions by the purchases it expects them to cause, the
    quantity the simulation measures (a money-priced catalogue optimises something else)."""
    actions = [
        action if action.kind == "none"
        else action.model_copy(update={"eligible": (), "value": None, "success_value": 1.0, "cost": 0.0})
        for action in catalogue.actions
    ]  # fmt: skip
    return catalogue.model_copy(update={"actions": tuple(actions)})


def decision_tasks(catalogue) -> tuple[str, ...]:
    """The tasks whose outputs the catalogue reads (rules, worth, drivers, uplift), registry order."""
    read = {
        name.split(".")[0]
        for action in catalogue.actions
        for name in (action.value, action.driver, action.uplift, *(rule.value for rule in action.eligible))
        if name and "." in name
    }
    return tuple(spec.name for spec in registry.known_tasks() if spec.name in read)


def risk_output(catalogue) -> str:
    """The score risk targeting ranks by: the driver of the catalogue's retention action."""
    found = next((a.driver for a in catalogue.actions if a.kind == "retention" and a.driver), None)
    if found is None:
        raise LookupError("the catalogue has no retention action with a driver: risk targeting needs one")
    return found


def policy_values(decided: pd.DataFrame, actions: tuple[str, ...], marketing: frozenset[str], seed: int,
                  resamples: int = 1_000) -> list[PolicyValue]:  # fmt: skip
    """The four policies' values on the same (non-empty) decisions (see the module docstring).
    ``decided`` columns: ``uplift_<action>``, ``chosen`` (an action or None), ``risk`` (the
    score risk targeting ranks by, as the service saw it), ``marketing_consent``."""
    from features.synthetic.campaign_history import uplift_column

    n = len(decided)
    U = decided[[uplift_column(a) for a in actions]].to_numpy(dtype=float)
    consent = decided["marketing_consent"].to_numpy(dtype=bool)
    allowed = consent[:, None] | ~np.isin(np.asarray(actions), list(marketing))[None, :]
    index = {a: j for j, a in enumerate(actions)}
    chosen = np.array([index.get(a, -1) if isinstance(a, str) else -1 for a in decided["chosen"]])
    treated = chosen >= 0
    k = int(treated.sum())
    rows = np.arange(n)
    values = {"ours": np.where(treated, U[rows, np.maximum(chosen, 0)], 0.0)}
    mean_allowed = np.where(allowed, U, 0.0).sum(axis=1) / np.maximum(allowed.sum(axis=1), 1)
    values["random"] = k / n * mean_allowed
    risk = np.where(consent, decided["risk"].fillna(-1.0).to_numpy(dtype=float), -np.inf)
    top_risk = np.argsort(-risk, kind="stable")[: min(k, int(consent.sum()))]
    gain = np.zeros(n)
    gain[top_risk] = U[top_risk, index["retention_offer"]]
    values["risk_targeting"] = gain
    best = np.where(allowed, U, -np.inf).max(axis=1)
    best = np.where(np.isfinite(best), np.maximum(best, 0.0), 0.0)
    gain = np.zeros(n)
    top = np.argsort(-best, kind="stable")[:k]
    gain[top] = best[top]
    values["oracle"] = gain
    counts = {"ours": k, "random": k, "risk_targeting": len(top_risk), "oracle": int((gain > 0).sum())}
    stacked = np.vstack([values[name] for name in POLICIES])
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM, 2]))
    means = np.empty((len(POLICIES), resamples))
    for first in range(0, resamples, 25):
        draws = rng.integers(0, n, size=(min(25, resamples - first), n))
        means[:, first : first + len(draws)] = stacked[:, draws].mean(axis=2)
    out = []
    for j, name in enumerate(POLICIES):
        low, high = np.percentile(means[j], [2.5, 97.5])
        out.append(PolicyValue(name=name, value=round(float(values[name].mean()), 5), ci_low=round(float(low), 5),
                               ci_high=round(float(high), 5), actions=counts[name]))  # fmt: skip
    return out


def simulate(ws: Workspace, config: SimulateConfig, progress: Progress | None = None) -> SimulationReport:
    """Run the loop (see the module docstring) in a new workspace; returns the report, also written
    to ``reports/simulation-<end>.json``."""
    report = SimulationReport(days=config.days, customers=config.customers, seed=config.seed,
                              start=str(config.start_at.date()), end=str(config.end))  # fmt: skip
    for _ in run_loop(ws, config, report, progress or silent):
        pass
    ws.reports_dir.mkdir(parents=True, exist_ok=True)
    path = ws.reports_dir / f"simulation-{config.end}.json"
    report.report = str(path)
    path.write_text(report.model_dump_json(indent=1))
    return report


def run_loop(
    ws: Workspace, config: SimulateConfig, report: SimulationReport, progress: Progress
) -> Iterator[str]:
    """The loop, yielding after each phase (the caller may render progress)."""
    from features.decision_log import DecisionLog
    from features.ingest import ingest
    from features.store import refresh_features
    from features.synthetic import CampaignHistory, WorldConfig, generate, load_truth, oracle_probabilities
    from features.synthetic.campaign_history import (
        ACTIONS,
        MARKETING,
        extra_purchase,
        reacts_badly,
        response_rates,
        stable_decision_id,
        uplift_column,
    )
    from features.synthetic.truth import Truth
    from features.synthetic.world import Latents
    from serving.actions import load_catalogue, parse_catalogue
    from serving.champions import resolve
    from serving.decisions import cooldown_horizon, decide, granted, view_from
    from serving.demo import promote_pending
    from serving.impact import impact_workspace
    from serving.online_features import OnlineFeatures
    from serving.predictor import answer_predictions
    from training.retrain import retrain_workspace
    from training.run import train_workspace
    from training.tracking import CHAMPION, resolve_tracking

    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        report.seconds[name] = round(report.seconds.get(name, 0.0) + now - clock, 2)
        clock = now

    catalogue = (
        parse_catalogue(config.catalogue.read_text(), str(config.catalogue))
        if config.catalogue
        else purchase_catalogue(load_catalogue(ws))
    )
    risk = risk_output(catalogue)
    start = config.start_at
    tasks = tuple(dict.fromkeys([*decision_tasks(catalogue), risk.split(".")[0]]))
    history = CampaignHistory(quiet_days=config.days)
    world_config = WorldConfig(customers=config.customers, seed=config.seed, days=config.history_days,
                               end=config.end, campaign_history=history)  # fmt: skip
    generate(ws, world_config, progress)
    truth = load_truth(ws)
    world = HiddenWorld(ws)
    world.reveal(start)
    lap("generate")
    yield "generated"
    ingest(ws, progress=progress)
    refresh_features(ws, start.to_pydatetime(), progress)
    results = train_workspace(ws, tasks=tasks, as_of=start, progress=progress)
    list(promote_pending(ws, results))
    lap("first training")
    yield "trained"

    horizon = pd.Timedelta(days=history.horizon_days)
    customers = truth.customers.set_index("customer_id", drop=False)
    ids = customers.index.to_numpy(dtype=object)
    bad_trait = pd.Series(reacts_badly(truth.config, ids), index=ids)
    card_owner = customers.dropna(subset=["loyalty_card"]).set_index("loyalty_card")["customer_id"]
    tx = world.frames["transactions"]
    owners = tx["customer_id"].where(tx["customer_id"].notna(), tx["loyalty_card"].map(card_owner))
    lookback = cooldown_horizon(catalogue)
    target = resolve_tracking(ws)
    models = resolve(target, CHAMPION, tasks=tasks)
    features = OnlineFeatures(ws)
    log = DecisionLog.of(ws)
    pending, decided_rows, added = _Pending(), [], 0
    try:
        for offset in range(config.days):
            day = start + pd.Timedelta(days=offset)
            if offset and offset % config.retrain_every_days == 0:
                world.reveal(day)
                ingest(ws, progress=progress)
                retrained = retrain_workspace(ws, reason=f"simulate day {offset}", as_of=day, tasks=tasks,
                                              progress=progress)  # fmt: skip
                done = retrained.to_dict()
                report.retrains.append({"day": offset, "moved": done["moved"],
                                        "tasks": {m["task"]: f"{m['status']}: {m['why']}" for m in done["tasks"]}})  # fmt: skip
                models = resolve(target, CHAMPION, models, tasks=tasks)
                features.refresh()
                lap("retrain")
            elif offset and offset % config.refresh_every_days == 0:
                world.reveal(day)
                ingest(ws, progress=progress)
                refresh_features(ws, day.to_pydatetime(), progress)
                features.refresh()
                report.refreshes += 1
                lap("refresh")
            triggered = world.triggers(day)
            triggered = triggered.loc[triggered["customer_id"].isin(customers.index)]
            signup = pd.to_datetime(customers.loc[triggered["customer_id"], "signup_at"], utc=True).to_numpy()
            triggered = triggered.loc[signup < day].reset_index(drop=True)
            report.triggers += len(triggered)
            if triggered.empty:
                report.outcomes += _post(log, pending.due(day + pd.Timedelta(days=1)))
                continue
            sub = Truth(truth.config, customers.loc[triggered["customer_id"]].reset_index(drop=True),
                        truth.incidents, truth.world)  # fmt: skip
            exact = oracle_probabilities(sub, day.to_pydatetime(), history.horizon_days).set_index(
                "customer_id"
            )
            exact = exact.loc[triggered["customer_id"]]
            state = customers.loc[triggered["customer_id"]].reset_index(drop=True)
            rates = response_rates(truth, state, day, bad_trait.loc[triggered["customer_id"]].to_numpy())
            rng = np.random.default_rng(np.random.SeedSequence([config.seed, _STREAM, offset]))
            batch_ids = triggered["customer_id"].tolist()
            services = [model.feature_service for model in models.models.values()] or [tasks[0]]
            read = features.read(batch_ids, services, day.to_pydatetime())
            predictions = answer_predictions(
                models, read, list(models.models), 0
            )  # no drivers: decisions do not read them
            contacts = log.contacts(batch_ids, since=(day - lookback).to_pydatetime())
            refs = models.refs()
            rows = []
            horizon_orders = world.purchases(owners, day, day + horizon + pd.Timedelta(days=1))
            lat = Latents.from_frame(state)
            mix = lat.purchase_mix(truth.config.dynamics)
            for i, prediction in enumerate(predictions):
                cid, at = batch_ids[i], triggered["at"].iloc[i]
                decision_id = stable_decision_id(config.seed, at, cid, namespace="sim")
                view = view_from(prediction, read.columns, i if read.snapshot_s[i] is not None else None)
                made = decide(view, catalogue, contacts.get(cid, []), at.to_pydatetime(), max_actions=1,
                              seed=decision_id, channel=triggered["channel"].iloc[i])  # fmt: skip
                if not made.scored:
                    continue
                rows.append({"decision_id": decision_id, "customer_id": cid, "at": at.to_pydatetime(),
                             "holdout": made.holdout, "actions": made.actions, "withheld": made.withheld,
                             "models": refs})  # fmt: skip
                given = made.actions[0] if made.actions else None
                planned = given or (made.withheld[0] if made.withheld else None)
                if planned is not None:
                    source = planned["uplift_source"]
                    report.uplift_source[source] = report.uplift_source.get(source, 0) + 1
                decided_rows.append({
                    "p0": float(exact["purchase"].iloc[i]),
                    **{uplift_column(a): float(exact[uplift_column(a)].iloc[i]) for a in ACTIONS},
                    "chosen": None if planned is None else planned["action"],
                    "risk": view.outputs.get(risk),
                    "marketing_consent": granted(view.features.get("profile_consent_marketing")),
                })  # fmt: skip
                if given is None or given["action"] not in ACTIONS:
                    continue
                name = given["action"]
                report.actions[name] = report.actions.get(name, 0) + 1
                pending.outcomes.append((at + pd.Timedelta(hours=1), decision_id, name, "delivered", None))
                if given["channel"] == "email" and rng.random() < truth.config.dynamics.open_probability:
                    pending.outcomes.append((at + pd.Timedelta(hours=4), decision_id, name, "opened", None))
                persuade, put_off = rates[name][0][i], rates[name][1][i]
                churn_at = pd.to_datetime(state["churn_at"].iloc[i], utc=True)
                end = at + horizon if pd.isna(churn_at) else min(at + horizon, churn_at)
                own = [o for t, o in horizon_orders.get(cid, []) if at < t <= end and o is not None]
                if not own and end > at and rng.random() < persuade:
                    added += 1
                    purchase = extra_purchase(rng, truth.config, cid, name, at, end, mix[i], lat.basket_value[i],
                                              f"OS{added:09d}")  # fmt: skip
                    world.added.append(purchase)
                    pending.outcomes.append((pd.Timestamp(purchase["timestamp"]), decision_id, name, "converted",
                                             purchase["amount"]))  # fmt: skip
                    report.persuaded += 1
                elif own and rng.random() < put_off:
                    world.dropped |= set(own)
                    report.put_off += 1
            log.record_decisions(rows)
            report.decisions += len(rows)
            report.holdout_decisions += sum(1 for r in rows if r["holdout"])
            report.outcomes += _post(log, pending.due(day + pd.Timedelta(days=1)))
            lap("decisions")
            yield f"day {offset + 1}"
    finally:
        log.close()
    end = start + pd.Timedelta(days=config.days)
    world.reveal(end)
    ingest(ws, progress=progress)
    impact = impact_workspace(ws, since=start.to_pydatetime(), horizon_days=history.horizon_days)
    report.impact = impact.as_dict()
    decided = pd.DataFrame(decided_rows)
    report.policies = (
        policy_values(decided, ACTIONS, MARKETING, config.seed, config.bootstrap) if len(decided) else []
    )
    report.purchase_without_action = round(float(decided["p0"].mean()), 5) if len(decided) else None
    values = {p.name: p for p in report.policies}
    if values:
        ours, rand, risk, best = (values[name] for name in POLICIES)
        spread = best.value - rand.value
        report.gap_closed = round((ours.value - rand.value) / spread, 4) if spread > 0 else None
        report.bar = {
            "above_random": ours.ci_low > rand.value,
            "above_risk_targeting": ours.ci_low > risk.value,
            f"gap_closed_at_least_{GAP_BAR}": report.gap_closed is not None and report.gap_closed >= GAP_BAR,
        }
    lap("report")
    yield "reported"
