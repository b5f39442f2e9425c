"""The CX Predict prediction API: a BentoML 1.4 service.

Start with ``cxpredict serve [--port P]`` or ``bentoml serve serving.service:CXPredict`` (the
workspace comes from ``CXPREDICT_HOME``). On start the service opens the Feast online store, loads
the registry's ``champion`` version of every task model and polls the alias (see
``serving.champions``). Blocks per customer: one per registered task; errors are JSON ``{"error", "field"}``.

The handlers' docstrings are the operations' descriptions in the OpenAPI document, which the
gateway serves at ``/docs.json`` (BentoML's, completed by ``serving.openapi``) with a Swagger UI at
``/docs``.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cache

import bentoml
from starlette.responses import JSONResponse, Response

from cxpredict import tasks as registry
from cxpredict.workspace import resolve_workspace
from serving.erased import ERASED, ErasedIds
from serving.gateway import GatewayMiddleware, Readiness
from serving.openapi import complete_openapi
from serving.predictor import ModelSet, answer_predictions, iso_seconds
from serving.schemas import (
    TASK_RESPONSES,
    ActionName,
    CustomerId,
    CustomerIds,
    DecideContext,
    DecideResponse,
    DecisionId,
    EventId,
    EventResponse,
    EventType,
    MaxActions,
    Outcome,
    OutcomeResponse,
    PredictResponse,
    ReloadResponse,
    Revenue,
    SurveyKind,
    SurveyScore,
)
from serving.settings import ServeSettings

log = logging.getLogger("cxpredict.serving")

READINESS = Readiness()
FUTURE_TOLERANCE = timedelta(minutes=5)


@cache
def metrics() -> dict[str, object]:
    """Prometheus metrics of the service (created once per process, on first use; BentoML serves them
    on ``/metrics`` next to its own request latency and count by endpoint)."""
    from prometheus_client import Counter, Gauge

    return {
        "predictions": Counter(
            name="cxpredict_predictions",
            documentation="Customer blocks answered, by task and outcome (scored, cold_start, no_consent, no_model).",
            labelnames=["task", "outcome"],
        ),
        "events": Counter(
            name="cxpredict_events",
            documentation="Events pushed to the online store.",
            labelnames=["event_type"],
        ),
        "served": Gauge(
            name="cxpredict_model_served",
            documentation="1 for the model version each task serves now (0 once replaced).",
            labelnames=["task", "name", "version"],
            multiprocess_mode="livemax",
        ),
        "reloads": Counter(
            name="cxpredict_model_swaps", documentation="Model sets swapped in after an alias moved."
        ),
        "store_errors": Counter(
            name="cxpredict_feature_store_errors",
            documentation="Requests refused because the online store failed.",
        ),
        "decisions": Counter(
            name="cxpredict_decisions", documentation="Decisions logged by /decide (holdout included)."
        ),
    }


def error(status: int, message: str, field: str | None = None) -> JSONResponse:
    """An error answer of the handlers: ``ErrorResponse`` in the OpenAPI document."""
    return JSONResponse({"error": message, "field": field}, status_code=status)


# ---- monitoring gauges: the latest `cxpredict monitor` summary and the online features' age ----
MONITOR_REFRESH_S = 15.0


@cache
def monitor_gauges() -> dict[str, object]:
    """Gauges of the latest monitor report (``reports/monitor-<as-of>.json``) and of the online
    store's age. Alerting rules read these; ``/readyz`` does not (drift is no reason to stop serving)."""
    from prometheus_client import Gauge

    def gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> object:
        return Gauge(
            name=name, documentation=documentation, labelnames=list(labels), multiprocess_mode="livemax"
        )

    return {
        "status": gauge(
            "cxpredict_monitor_status", "1 when the latest monitor report crossed a threshold, else 0."
        ),
        "as_of": gauge("cxpredict_monitor_as_of_seconds", "As-of of the latest monitor report (Unix time)."),
        "task_alert": gauge(
            "cxpredict_monitor_task_alert", "1 when the task crossed a threshold.", ("task",)
        ),
        "drifted": gauge(
            "cxpredict_drifted_features", "Features of the task's champion that drifted.", ("task",)
        ),
        "drift_share": gauge(
            "cxpredict_drift_share", "Share of the task's features that drifted.", ("task",)
        ),
        "realised_auc": gauge(
            "cxpredict_realised_auc", "Realised AUC of the latest matured score output.", ("task",)
        ),
        "features_age": gauge(
            "cxpredict_online_features_age_seconds", "Seconds since the online store's feature snapshot."
        ),
    }


def export_monitoring(ws, features) -> None:
    """Set the monitoring gauges from the newest monitor report and the online snapshot's time."""
    from training.monitor import latest_summary

    gauges = monitor_gauges()
    summary = latest_summary(ws)
    if summary is not None:
        gauges["status"].set(1.0 if summary.get("status") == "alert" else 0.0)
        gauges["as_of"].set(datetime.fromisoformat(summary["as_of"]).timestamp())
        for task in summary.get("tasks", []):
            name = task["task"]
            gauges["task_alert"].labels(task=name).set(1.0 if task.get("status") == "alert" else 0.0)
            drift = task.get("feature_drift") or {}
            gauges["drifted"].labels(task=name).set(len(drift.get("drifted", [])))
            gauges["drift_share"].labels(task=name).set(float(drift.get("share") or 0.0))
            realised = (summary.get("performance") or {}).get(name) or []
            if realised and realised[-1].get("auc") is not None:
                gauges["realised_auc"].labels(task=name).set(float(realised[-1]["auc"]))
    if features is not None:
        as_of = features.snapshot_as_of()
        if as_of is not None:
            gauges["features_age"].set((datetime.now(UTC) - as_of).total_seconds())


def watch_monitoring(ws, features, every_s: float = MONITOR_REFRESH_S) -> threading.Event:
    """Refresh the monitoring gauges now and every ``every_s`` seconds in a daemon thread; set the
    returned event to stop."""
    stop = threading.Event()

    def refresh() -> None:
        try:
            export_monitoring(ws, features)
        except Exception as failure:  # a bad report or a store hiccup must not take the service down
            log.warning("monitoring gauges not refreshed: %s", type(failure).__name__)

    def loop() -> None:
        while not stop.wait(every_s):
            refresh()

    refresh()
    threading.Thread(target=loop, name="cxpredict-monitor-gauges", daemon=True).start()
    return stop


RELOAD_MARKER = "reload-requested"


def _mtime(path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


class _Service:
    """Churn, next purchase and unmet needs for orchestration systems, with reasons."""

    def __init__(self) -> None:
        from serving.champions import Champions
        from serving.online_features import OnlineFeatures
        from training.tracking import resolve_tracking

        self.settings = ServeSettings()
        self.ws = resolve_workspace(self.settings.home)
        self.feature_error: str | None = None
        self.features = None
        self.reload_marker = self.ws.serving_dir / RELOAD_MARKER
        from serving.actions import load_catalogue
        from features.decision_log import DecisionLog
        from serving.decisions import cooldown_horizon

        self.catalogue = load_catalogue(self.ws)
        self.decision_horizon = cooldown_horizon(self.catalogue)
        self.decisions = DecisionLog.of(self.ws)
        self.erased = ErasedIds(self.ws)
        self._reload_seen = _mtime(self.reload_marker)
        try:
            self.features = OnlineFeatures(self.ws)
            self.features.warm([spec.feature_service for spec in registry.all_tasks()])
        except Exception as failure:
            self.feature_error = f"the feature store could not be opened: {type(failure).__name__}: {failure}"
            log.error(self.feature_error)
        self.champions = Champions(
            resolve_tracking(self.ws),
            self.settings.model_alias,
            on_swap=self._swapped,
            pinned=self.settings.pinned(),
        )
        self._swapped(ModelSet(), self.champions.current)
        self.champions.watch(self.settings.reload_seconds)
        self._monitoring = watch_monitoring(self.ws, self.features)
        READINESS.report = self.readiness
        gc.collect()
        gc.freeze()

    # ---- state -------------------------------------------------------------------------------
    def _swapped(self, before: ModelSet, after: ModelSet) -> None:
        gauge = metrics()["served"]
        for task, model in before.models.items():
            gauge.labels(task=task, name=model.name, version=model.version).set(0)
        for task, model in after.models.items():
            gauge.labels(task=task, name=model.name, version=model.version).set(1)
        if before.models:
            metrics()["reloads"].inc()
        log.info("serving model versions %s", after.versions())

    def _sync(self) -> None:
        """Pick up what another worker or process asked for: ``/admin/reload`` touches a marker
        file in the workspace, and every worker reloads when it sees the marker change."""
        seen = _mtime(self.reload_marker)
        if seen != self._reload_seen:
            self._reload_seen = seen
            self.champions.reload()

    def readiness(self) -> tuple[bool, dict]:
        self._sync()
        models = self.champions.current
        reasons = [self.feature_error] if self.feature_error else []
        as_of = None
        if self.features is not None:
            if failure := self.features.probe():
                reasons.append(failure)
            else:
                as_of = self.features.snapshot_as_of()
        reasons += [f"{task}: {reason}" for task, reason in models.missing.items()]
        return not reasons, {
            "reasons": reasons,
            "models": models.refs(),
            "features_as_of": iso_seconds(as_of.timestamp()) if as_of else None,
        }

    @bentoml.on_shutdown
    def _stop_watching(self) -> None:
        self.champions.stop()
        self._monitoring.set()

    # ---- predictions -------------------------------------------------------------------------
    def _predict(self, customer_ids: Sequence[str], tasks: Sequence[str]) -> Response:
        answered = self._answer(customer_ids, tasks)
        if isinstance(answered, Response):
            return answered
        return Response(json.dumps(answered[0], separators=(",", ":")), media_type="application/json")

    def _answer(self, customer_ids: Sequence[str], tasks: Sequence[str], drivers: int | None = None):
        """(the ``/predict`` body, the request's features), or the error Response; ``drivers`` per
        block (default: the settings')."""
        from serving.online_features import StoreUnavailable

        self._sync()
        models = self.champions.current
        if self.features is None:
            return error(503, self.feature_error or "the feature store is not available")
        request_time = datetime.now(UTC)
        served = [models.models[task] for task in tasks if task in models.models]
        services = [model.feature_service for model in served] or [registry.get(tasks[0]).feature_service]
        try:
            features = self.features.read(customer_ids, services, request_time)
        except StoreUnavailable as failure:
            metrics()["store_errors"].inc()
            log.error("online store read failed: %s", failure)
            return error(503, str(failure))
        k = self.settings.drivers if drivers is None else drivers
        predictions = answer_predictions(models, features, tasks, k)
        n, counter = len(customer_ids), metrics()["predictions"]
        scored = sum(
            1 for s, c in zip(features.snapshot_s, features.consent, strict=True) if s is not None and c
        )
        cold = sum(1 for s in features.snapshot_s if s is None)
        refused = sum(1 for c in features.consent if not c)
        for task in tasks:
            if task not in models.models:
                counter.labels(task=task, outcome="no_model").inc(n)
                continue
            counter.labels(task=task, outcome="scored").inc(scored)
            if cold:
                counter.labels(task=task, outcome="cold_start").inc(cold)
            if refused:
                counter.labels(task=task, outcome="no_consent").inc(refused)
        refs = models.refs()
        body = {
            "request_time": request_time.isoformat().replace("+00:00", "Z"),
            "models": {task: refs[task] for task in tasks},
            "predictions": predictions,
        }
        return body, features

    @bentoml.api(route="/predict")
    def predict(self, customer_ids: CustomerIds) -> PredictResponse:
        """Every task's block (churn, next purchase, unmet needs, ...) for 1 to 1,000 customers, in the
        order sent. ``models`` names the model version behind each block; a task without a model
        answers null blocks and says why there."""
        return self._predict(customer_ids, registry.names())

    # ---- events and admin --------------------------------------------------------------------
    @bentoml.api(route="/events")
    def events(
        self,
        customer_id: CustomerId,
        event_type: EventType,
        timestamp: datetime | None = None,
        kind: SurveyKind | None = None,
        score: SurveyScore | None = None,
        event_id: EventId | None = None,
    ) -> EventResponse:
        """Push one event (session, page view, ticket opened/resolved, survey answered with its kind and
        score, ...) so the next prediction sees it. The 200 comes once the event is in the durable
        log; a retry with the same ``event_id`` (or the same event with its ``timestamp``) is counted once;
        an event sent with neither is stamped by the server and cannot be recognised as a retry."""
        from features.event_log import SURVEY_EVENTS, SURVEY_SCALES, RealtimeEvent
        from serving.online_features import StoreUnavailable

        if self.features is None:
            return error(503, self.feature_error or "the feature store is not available")
        now = datetime.now(UTC)
        moment = now if timestamp is None else timestamp
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        if moment > now + FUTURE_TOLERANCE:
            return error(400, "the event is in the future", "timestamp")
        survey = event_type in SURVEY_EVENTS
        if survey and kind is None:
            return error(400, "a survey_answered event needs kind (nps or csat)", "kind")
        if survey:
            low, high = SURVEY_SCALES[kind]
            if score is None or not (low <= score <= high and float(score).is_integer()):
                return error(400, f"a {kind} score is a whole number between {low} and {high}", "score")
        if not survey and (kind is not None or score is not None):
            return error(
                400, "kind and score belong to survey_answered events only", "kind" if kind else "score"
            )
        if self.erased.among([customer_id]):
            return error(410, f"this customer was {ERASED}: events for them are not kept", "customer_id")
        try:
            self.features.sync()
            as_of = self.features.snapshot_as_of()
            if as_of is not None and moment < as_of:
                return error(
                    400, "the event is older than the feature snapshot, which already holds it", "timestamp"
                )
            known = self.features.known(customer_id)
            event = RealtimeEvent(
                customer_id=customer_id, event_type=event_type, timestamp=moment, kind=kind, score=score
            )
            if event_id is None and timestamp is None:
                event_id = f"server:{uuid.uuid4().hex}"  # stamped here: no retry can repeat it
            pushed = self.features.push(event, event_id, mirror=known)
        except StoreUnavailable as failure:
            metrics()["store_errors"].inc()
            log.error("event push failed: %s", failure)
            return error(503, str(failure))
        if not pushed.duplicate:
            metrics()["events"].labels(event_type=event_type).inc()
        return EventResponse(
            customer_id=customer_id,
            event_type=event_type,
            accepted=True,
            event_id=pushed.event_id,
            duplicate=pushed.duplicate,
            known_customer=known,
            realtime=pushed.counters,
        )

    @bentoml.api(route="/decide")
    def decide(
        self,
        customer_ids: CustomerIds,
        context: DecideContext | None = None,
        max_actions: MaxActions = 3,
    ) -> DecideResponse:
        """The next best actions for 1 to 1,000 customers, ranked, with channel, send window, priority,
        propensity and reasons, and the actions suppressed with the rule that suppressed them. A
        stable share of customers (the holdout) gets no action; every decision is in the durable
        decision log before the answer."""
        from serving.decisions import as_answer, decide, view_from

        # no drivers: a decision reads the blocks' numbers, never their drivers, which are costly
        answered = self._answer(customer_ids, registry.names(), drivers=0)
        if isinstance(answered, Response):
            return answered
        body, features = answered
        now = datetime.now(UTC)
        catalogue = self.catalogue
        try:
            history = self.decisions.contacts(list(customer_ids), since=now - self.decision_horizon)
        except Exception as failure:
            return error(503, f"the decision log could not be read ({type(failure).__name__})")
        answers, rows = [], []
        channel = None if context is None else context.channel
        erased = self.erased.among(list(customer_ids))
        for i, prediction in enumerate(body["predictions"]):
            if prediction["customer_id"] in erased:
                gone = {"customer_id": prediction["customer_id"], "decision_id": None, "scored": False,
                        "reason": ERASED, "holdout": False, "actions": [], "suppressed": []}  # fmt: skip
                answers.append(gone)
                continue
            row = i if features.snapshot_s[i] is not None else None
            decision_id = f"d-{uuid.uuid4().hex}"
            made = decide(
                view_from(prediction, features.columns, row),
                catalogue,
                history.get(prediction["customer_id"], []),
                now,
                max_actions=max_actions,
                seed=decision_id,
                channel=channel,
            )
            if not made.scored:
                answers.append(as_answer(made, None))
                continue
            answers.append(as_answer(made, decision_id))
            rows.append({"decision_id": decision_id, "customer_id": made.customer_id, "at": now,
                         "holdout": made.holdout, "actions": made.actions, "withheld": made.withheld,
                         "models": body["models"]})  # fmt: skip
        try:
            self.decisions.record_decisions(rows)
        except Exception as failure:
            log.error("decision log write failed: %s", type(failure).__name__)
            return error(503, f"the decisions could not be logged ({type(failure).__name__})")
        metrics()["decisions"].inc(len(rows))
        answer = {"request_time": body["request_time"], "models": body["models"], "decisions": answers}
        return Response(json.dumps(answer, separators=(",", ":")), media_type="application/json")

    @bentoml.api(route="/outcomes")
    def outcomes(
        self,
        decision_id: DecisionId,
        action: ActionName,
        outcome: Outcome,
        timestamp: datetime | None = None,
        revenue: Revenue | None = None,
    ) -> OutcomeResponse:
        """Report what happened to a decided action (delivered, opened, ..., converted); once per
        decision, action and outcome, durable before the answer. The customer's offer features
        (received, accepted, rejected in the last 30 days) are then pushed to the feature store."""
        from features.decision_log import ActionNotDecided, UnknownDecision

        moment = datetime.now(UTC) if timestamp is None else timestamp
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        try:
            recorded = self.decisions.record_outcome(decision_id, action, outcome, moment, revenue)
        except UnknownDecision:
            return error(404, "no decision with this id", "decision_id")
        except ActionNotDecided:
            return error(400, "this action was not decided for this decision", "action")
        except Exception as failure:
            return error(503, f"the outcome could not be logged ({type(failure).__name__})")
        offers = None
        if self.features is not None and not self.erased.among([recorded.customer_id]):
            offers = self.features.push_offers(self.decisions, recorded.customer_id)
        return OutcomeResponse(
            decision_id=decision_id,
            action=action,
            outcome=outcome,
            accepted=True,
            duplicate=recorded.duplicate,
            offers=offers,
        )

    @bentoml.api(route="/admin/reload")
    def reload(self) -> ReloadResponse:
        """Check the registry alias now and re-read the Feast registry, in every worker: this one at
        once, the others on their next request (a marker file in the workspace tells them)."""
        if self.features is not None:
            try:
                self.features.refresh()
            except Exception as failure:
                return error(503, str(failure))
        self.reload_marker.parent.mkdir(parents=True, exist_ok=True)
        self.reload_marker.touch()
        self._reload_seen = _mtime(self.reload_marker)
        models, changed = self.champions.reload()
        return ReloadResponse(changed=changed, models=models.refs())


def _task_endpoint(spec: registry.TaskSpec):
    """``POST /<task>``: one task's block only."""

    def endpoint(self, customer_ids: CustomerIds) -> PredictResponse:
        return self._predict(customer_ids, (spec.name,))

    endpoint.__name__ = endpoint.__qualname__ = spec.name
    endpoint.__doc__ = f"{spec.summary} The same input and answer as /predict, with this block only."
    endpoint.__annotations__["return"] = TASK_RESPONSES[spec.name]
    return bentoml.api(route=f"/{spec.cli_name}")(endpoint)


for _spec in registry.all_tasks():
    setattr(_Service, _spec.name, _task_endpoint(_spec))

CXPredict = bentoml.service(
    name="cxpredict", workers=1, threads=4, traffic={"timeout": 30}, http={"port": 3000}
)(_Service)


def openapi_document() -> dict:
    """The API's OpenAPI document: what BentoML reads from the handlers, completed."""
    inputs = {name: api.input_spec for name, api in CXPredict.apis.items()}
    return complete_openapi(CXPredict.openapi_spec.asdict(), inputs)


CXPredict.add_asgi_middleware(GatewayMiddleware, readiness=READINESS, openapi=openapi_document)
