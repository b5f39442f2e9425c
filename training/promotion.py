"""Champion/challenger gate, promotion and rollback of registered task models.

``promote`` evaluates the candidate (default: ``@challenger``) and the current ``@champion`` on the
same evaluation set: the latest cutoff whose label window is complete, built by an injected
``evaluation_set(task, horizon_days)`` (in production the canonical tables + Feast
``features_for``; ``build_evaluation_set`` does the work given those). It moves ``champion`` only when
every check passes (or with ``force`` and a reason):

- AUC: on the same rows, the bootstrap interval (over customers) of candidate AUC - champion AUC
  reaches at least ``-auc_tolerance``: a difference inside the noise is neither a win nor a loss
  (no champion: not applicable);
- calibration: candidate ECE <= ``ece_bound``, or no worse than the champion's on the same rows;
- label definition and horizon identical to the champion's (and to the evaluation set's);
- feature service resolvable: an injected check (the lead wires Feast); by default every feature
  recorded on the version is a column of the evaluation set;
- baselines: at training time no baseline was better than the candidate beyond the noise, and the
  candidate was better than chance beyond the noise on its validation cutoff;
- held out: the evaluation cutoff is after both models' validation cutoffs (no model saw it);
- training run: the candidate's training run ended FINISHED and the version carries every lineage
  tag (``model_registry.version_problem``). A version failing this is refused before anything is
  evaluated (its artifacts may be incomplete); ``force`` still overrides, with the check recorded.

MLflow's own evaluation and validation do the metric work: each model is loaded from the registry,
predicts the evaluation set once, and its predictions run through ``mlflow.models.evaluate``
(custom metrics: AUC, ECE, Brier, log loss, PR-AUC) in one "promotion" run of the task's
experiment, linked to the models; the calibration check is ``mlflow.validate_evaluation_results``
with a ``MetricThreshold``. MLflow's thresholds compare point estimates, so the AUC check is the
paired bootstrap interval instead (``training.metrics.bootstrap_auc_difference``).
Tasks with several binary targets (unmet needs) are gated on the mean over the targets both models
predict.

The move is a compare-and-set (``model_registry.move_alias``): if the champion changed while evaluating,
the gate runs again against the new champion, so racing promotions leave one champion and a
history in which every move starts where the previous one ended.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.metrics import MetricValue
from mlflow.models import EvaluationResult, MetricThreshold, make_metric
from mlflow.models.evaluation.validation import ModelValidationFailedException
from pydantic import BaseModel, ConfigDict, Field

from cxpredict import tasks as registry
from sklearn.metrics import brier_score_loss, log_loss

from training import labels as L
from training import metrics as m
from training.uplift_gate import evaluate_uplift, shared_actions, uplift_checks
from training.cutoffs import plan_cutoffs, utc_timestamp
from training.datasets import FeaturesFor, feature_columns
from training.lifecycle import process_tags
from training.model_registry import (
    CHALLENGER,
    CHAMPION,
    AliasConflict,
    AuditEntry,
    alias_stack,
    alias_version,
    default_actor,
    move_alias,
    read_history,
    registered_problem,
)
from training.tasks import implementation
from training.tracking import (
    TrackingTarget,
    ensure_experiment,
    predict_params,
    tracking_session,
)

LABEL = "label"


class GateConfig(BaseModel):
    """Promotion thresholds: the one home of the gate's defaults (the command line reads them here)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    auc_tolerance: float = Field(
        0.01, ge=0, le=1, description="largest AUC drop versus the champion, beyond the bootstrap noise"
    )
    bootstrap_resamples: int = Field(200, ge=20, description="resamples of the AUC difference interval")
    ece_bound: float = Field(0.02, gt=0, le=1, description="largest expected calibration error")
    total_error_bound: float = Field(
        0.15, gt=0, le=1, description="continuous targets: largest relative error of the predicted total"
    )
    require_beats_baselines: bool = True
    max_attempts: int = Field(3, ge=1, description="gate re-runs when the champion moves meanwhile")
    lock_timeout_s: float = Field(30.0, gt=0)


class PromotionError(RuntimeError):
    """A promotion or rollback that cannot even be attempted (unknown version, missing reason...)."""


@dataclass(frozen=True)
class EvaluationSet:
    """Rows of one cutoff t: model inputs (features only, no keys) and label columns, aligned."""

    task: str
    cutoff: pd.Timestamp
    horizon_days: int
    as_of: pd.Timestamp
    features: pd.DataFrame
    labels: pd.DataFrame

    def __post_init__(self) -> None:
        if len(self.features) != len(self.labels):
            raise ValueError("evaluation features and labels differ in length")
        if self.cutoff + pd.Timedelta(days=self.horizon_days) > self.as_of:
            raise ValueError("the evaluation cutoff's label window is not complete at as_of")


EvaluationSetFor = Callable[[str, int], EvaluationSet]
FeatureCheck = Callable[[str, str, Sequence[str], EvaluationSet], str | None]


def build_evaluation_set(
    task: str,
    horizon_days: int,
    tables: Mapping[str, pd.DataFrame | None],
    features_for: FeaturesFor,
    as_of: object,
    align_to_month_start: bool = True,
) -> EvaluationSet:
    """Labels at the latest cutoff t with t + H <= as_of (floored to a month start, where feature
    snapshots live, like training's held-out cutoff), joined with ``features_for`` at t."""
    as_of = utc_timestamp(as_of)
    cutoff = plan_cutoffs(as_of, horizon_days, 3, 1, align_to_month_start).test
    labels = implementation(task).labels(tables, (cutoff,), horizon_days, as_of)
    frame, label_columns = labels.frame, list(labels.columns)
    frame = frame.assign(
        event_timestamp=pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    )
    retrieved = features_for(frame[L.KEYS].copy(), task)
    retrieved = retrieved.assign(
        event_timestamp=pd.to_datetime(retrieved["event_timestamp"], utc=True).astype("datetime64[us, UTC]"),
        customer_id=retrieved["customer_id"].astype(object),
    )
    names = feature_columns(retrieved, label_columns)
    joined = frame.assign(customer_id=frame["customer_id"].astype(object)).merge(
        retrieved[[*L.KEYS, *names]], on=L.KEYS, how="left", validate="one_to_one"
    )
    return EvaluationSet(
        task=task,
        cutoff=cutoff,
        horizon_days=horizon_days,
        as_of=as_of,
        features=joined[names].reset_index(drop=True),
        labels=joined[label_columns].reset_index(drop=True),
    )


def evaluation_sets(
    tables: Mapping[str, pd.DataFrame | None], features_for: FeaturesFor, as_of: object
) -> EvaluationSetFor:
    """``evaluation_set(task, horizon_days)`` over fixed tables, retrieval and as-of (cached per key)."""
    cache: dict[tuple[str, int], EvaluationSet] = {}

    def evaluation_set(task: str, horizon_days: int) -> EvaluationSet:
        key = (task, int(horizon_days))
        if key not in cache:
            cache[key] = build_evaluation_set(task, int(horizon_days), tables, features_for, as_of)
        return cache[key]

    return evaluation_set


def columns_present(
    task: str, service: str, features: Sequence[str], evaluation: EvaluationSet
) -> str | None:
    """Default feature-service check: every recorded feature is retrievable (a column of the set)."""
    missing = sorted(set(features) - set(evaluation.features.columns))
    if missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        return f"{len(missing)} of {len(features)} features not retrievable: {shown}"
    return None


def _metric(name: str, function: Callable[[np.ndarray, np.ndarray], float], greater_is_better: bool):
    def eval_fn(predictions: pd.Series, targets: pd.Series) -> MetricValue:
        y = np.asarray(targets, dtype=float)
        p = np.clip(np.asarray(predictions, dtype=float), m.EPSILON, 1 - m.EPSILON)
        return MetricValue(aggregate_results={name: float(function(y, p)) if len(y) else float("nan")})

    return make_metric(eval_fn=eval_fn, greater_is_better=greater_is_better, name=name)


def gate_metrics() -> list:
    """Custom MLflow metrics for probability outputs (the built-in classifier metrics need labels)."""
    return [
        _metric("auc", m.auc, True),
        _metric("ece", m.expected_calibration_error, False),
        _metric("brier", brier_score_loss, False),
        _metric("log_loss", lambda y, p: log_loss(y, p, labels=[0, 1]), False),
        _metric("pr_auc", m.pr_auc, True),
    ]


SUMMARY_METRICS = ("auc", "ece", "brier", "log_loss", "pr_auc")


def _spend_metric(name: str, function: Callable[[np.ndarray, np.ndarray], float], greater_is_better: bool):
    def eval_fn(predictions: pd.Series, targets: pd.Series) -> MetricValue:
        y, p = np.asarray(targets, dtype=float), np.asarray(predictions, dtype=float)
        return MetricValue(aggregate_results={name: float(function(y, p)) if len(y) else float("nan")})

    return make_metric(eval_fn=eval_fn, greater_is_better=greater_is_better, name=name)


def continuous_gate_metrics() -> list:
    """Custom MLflow metrics for continuous outputs (spend): normalised Gini, MAE, total error."""
    return [
        _spend_metric("gini", m.normalized_gini, True),
        _spend_metric("mae", m.mae, False),
        _spend_metric("total_error", m.total_error, False),
        _spend_metric("abs_total_error", lambda y, p: abs(m.total_error(y, p)), False),
    ]


CONTINUOUS_SUMMARY = ("gini", "mae", "total_error", "abs_total_error")


@dataclass
class ModelEvaluation:
    """One registered version evaluated on the evaluation set."""

    version: str
    tags: dict[str, str]
    params: dict[str, str]
    features: list[str]
    targets: dict[str, str]  # label column -> model output column (binary heads, or continuous)
    per_target: dict[str, dict[str, float]] = field(default_factory=dict)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # target -> probabilities, per row
    result: EvaluationResult | None = None
    kind: str = "auc"
    """The gate metric of the task: ``auc`` (probabilities) or ``gini`` (continuous outputs)."""

    def summary(self, targets: Sequence[str]) -> dict[str, float]:
        """Mean of each metric over ``targets`` (the single target for churn and next purchase)."""
        out = {
            name: float(np.mean([self.per_target[target][name] for target in targets]))
            if targets
            else float("nan")
            for name in (SUMMARY_METRICS if self.kind == "auc" else CONTINUOUS_SUMMARY)
        }
        out["rows"] = (
            float(np.mean([self.per_target[target]["rows"] for target in targets])) if targets else 0.0
        )
        return out


def _targets(model: mlflow.pyfunc.PyFuncModel) -> dict[str, str]:
    """Label column (an uplift model: action) -> output the gate compares: binary heads, a bundle's
    continuous targets, effect heads."""
    bundle = model.unwrap_python_model().bundle
    binary = {head["name"]: head["output"] for head in bundle.spec["heads"] if head["kind"] == "binary"}
    effects = {head["action"]: head["output"] for head in bundle.spec["heads"] if head["kind"] == "effect"}
    return {**binary, **dict(bundle.spec.get("continuous_targets", {})), **effects}


def _as_caller_sends(features: pd.DataFrame) -> pd.DataFrame:
    categorical = [name for name in features.columns if isinstance(features[name].dtype, pd.CategoricalDtype)]
    return features.astype({name: object for name in categorical})


def load_version(
    client: mlflow.MlflowClient, name: str, version: str
) -> tuple[mlflow.pyfunc.PyFuncModel, ModelEvaluation]:
    registered = client.get_model_version(name, version)
    tags = dict(registered.tags)
    params: dict[str, str] = {}
    run_id = tags.get("run_id") or registered.run_id
    if run_id:
        try:
            params = dict(client.get_run(run_id).data.params)
        except MlflowException:
            params = {}
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    features = list(model.metadata.get_input_schema().input_names())
    kind = registry.get(tags["task"]).gate_metric if tags.get("task") else "auc"
    return model, ModelEvaluation(str(version), tags, params, features, _targets(model), kind=kind)


def evaluate_version(
    model: mlflow.pyfunc.PyFuncModel,
    evaluation: ModelEvaluation,
    evaluation_set: EvaluationSet,
    targets: Sequence[str],
    role: str,
) -> None:
    """``mlflow.models.evaluate`` per target into the active run (metric prefix ``<role>.<target>.``);
    fills ``evaluation.per_target`` and ``evaluation.result`` (metrics averaged over targets)."""
    inputs = [name for name in evaluation.features if name in evaluation_set.features]
    data = _as_caller_sends(evaluation_set.features[inputs])
    predicted = model.predict(data, params=predict_params(evaluation_set.cutoff))
    for target in targets:
        output = evaluation.targets[target]
        evaluation.predictions[target] = predicted[output].to_numpy(dtype=float)
        binary = evaluation.kind == "auc"
        labels = evaluation_set.labels[target].to_numpy(dtype=np.int64 if binary else float)
        result = mlflow.models.evaluate(
            data=pd.DataFrame({output: evaluation.predictions[target], LABEL: labels}),
            targets=LABEL,
            predictions=output,
            model_type=None,
            extra_metrics=gate_metrics() if binary else continuous_gate_metrics(),
            evaluator_config={"metric_prefix": f"{role}.{target}.", "log_model_explainability": False},
        )
        prefix = f"{role}.{target}."
        values = {
            key[len(prefix) :]: float(value)
            for key, value in result.metrics.items()
            if key.startswith(prefix)
        }
        values["rows"] = float(len(data))
        evaluation.per_target[target] = values
    evaluation.result = EvaluationResult(metrics=evaluation.summary(targets), artifacts={})


@dataclass(frozen=True)
class Check:
    """One gate check with the values it compared."""

    name: str
    passed: bool
    candidate: str
    champion: str
    requirement: str
    detail: str = ""


def _validated(thresholds: dict[str, MetricThreshold], result: EvaluationResult) -> tuple[bool, str]:
    try:
        mlflow.validate_evaluation_results(thresholds, result)
    except ModelValidationFailedException as failure:
        return False, failure.message
    return True, ""


def _f(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.4f}"


def _lineage(evaluation: ModelEvaluation, key: str) -> str | None:
    return evaluation.tags.get(key) or evaluation.params.get(key)


def _auc_check(
    candidate: ModelEvaluation,
    champion: ModelEvaluation,
    evaluation_set: EvaluationSet,
    targets: Sequence[str],
    config: GateConfig,
) -> Check:
    """Candidate vs champion on the same rows: the bootstrap interval (over customers) of the AUC
    (continuous targets: normalised Gini) difference, averaged over the targets. The candidate fails
    only when it is worse beyond the noise: the interval's upper end is below ``-auc_tolerance``."""
    binary = candidate.kind == "auc"
    difference = m.bootstrap_auc_difference if binary else m.bootstrap_gini_difference
    name = "AUC" if binary else "Gini"
    intervals = [
        difference(
            evaluation_set.labels[target].to_numpy(dtype=np.int64 if binary else float),
            candidate.predictions[target],
            champion.predictions[target],
            resamples=config.bootstrap_resamples,
        )
        for target in targets
    ]
    diff, low, high = (float(np.mean([i[key] for i in intervals])) for key in ("diff", "low", "high"))
    passed = bool(np.isfinite(high) and high >= -config.auc_tolerance)
    return Check(
        name,
        passed,
        _f(candidate.result.metrics[candidate.kind]),
        _f(champion.result.metrics[candidate.kind]),
        f"difference not below -{config.auc_tolerance:g} beyond the noise",
        f"candidate - champion {diff:+.4f}, 95% interval [{low:+.4f}, {high:+.4f}]",
    )


def gate_checks(
    task: str,
    candidate: ModelEvaluation,
    champion: ModelEvaluation | None,
    evaluation_set: EvaluationSet,
    targets: Sequence[str],
    config: GateConfig,
    feature_check: FeatureCheck,
) -> list[Check]:
    """The checks of the gate, each with pass/fail and the values behind it."""
    checks = []
    if not targets:
        checks.append(
            Check(
                "targets",
                False,
                ", ".join(candidate.targets),
                "–",
                "a shared target",
                "none in common",
            )
        )
    if candidate.kind == "qini":
        checks += uplift_checks(candidate, champion, evaluation_set, targets, config) if targets else []
    else:
        checks += _score_checks(candidate, champion, evaluation_set, targets, config)
    checks += _lineage_checks(task, candidate, champion, evaluation_set, config, feature_check)
    return checks


def _score_checks(
    candidate: ModelEvaluation,
    champion: ModelEvaluation | None,
    evaluation_set: EvaluationSet,
    targets: Sequence[str],
    config: GateConfig,
) -> list[Check]:
    """Ranking (AUC or Gini against the champion) and calibration (ECE or total error)."""
    cand = candidate.result.metrics
    champ = champion.result.metrics if champion else {}
    checks = []
    binary = candidate.kind == "auc"
    if champion is None:
        name = "AUC" if binary else "Gini"
        checks.append(Check(name, True, _f(cand[candidate.kind]), "–", "no champion: not compared"))
    else:
        checks.append(_auc_check(candidate, champion, evaluation_set, targets, config))
    level, bound = ("ece", config.ece_bound) if binary else ("abs_total_error", config.total_error_bound)
    passed, detail = _validated(
        {level: MetricThreshold(threshold=float(bound), greater_is_better=False)}, candidate.result
    )
    # The bound keeps a miscalibrated model out; it does not keep a worse one in. On the same rows a
    # candidate no worse than the served champion also passes (a season or a shift in behaviour
    # moves every model's calibration, and refusing the better one leaves the worse one serving).
    requirement = f"<= {bound:g} or no worse than the champion's"
    if not passed and champion is not None and cand[level] <= champ.get(level, np.nan) + 1e-9:
        passed, detail = True, ""
    checks.append(
        Check(
            "calibration (ECE)" if binary else "level (total error)",
            passed,
            _f(cand[level]),
            _f(champ.get(level)),
            requirement,
            detail,
        )
    )
    return checks


def _lineage_checks(
    task: str,
    candidate: ModelEvaluation,
    champion: ModelEvaluation | None,
    evaluation_set: EvaluationSet,
    config: GateConfig,
    feature_check: FeatureCheck,
) -> list[Check]:
    """Same label, horizon and feature service; better than chance and the baselines at training."""
    checks = []
    current = registry.get(task).label_definition
    cand_label = _lineage(candidate, "label_definition")
    champ_label = _lineage(champion, "label_definition") if champion else None
    same_label = cand_label == current and (champion is None or champ_label == cand_label)
    checks.append(
        Check(
            "label definition",
            same_label,
            _short(cand_label),
            _short(champ_label),
            "identical to the champion's and the evaluation's",
            "" if same_label else f"evaluation labels: {_short(current)}",
        )
    )
    cand_h = _lineage(candidate, "horizon_days")
    champ_h = _lineage(champion, "horizon_days") if champion else None
    same_h = cand_h == str(evaluation_set.horizon_days) and (champion is None or champ_h == cand_h)
    checks.append(
        Check(
            "horizon (days)",
            same_h,
            str(cand_h),
            str(champ_h or "–"),
            f"identical, = {evaluation_set.horizon_days}",
        )
    )
    service = _lineage(candidate, "feature_service") or task
    problem = feature_check(task, service, candidate.features, evaluation_set)
    checks.append(
        Check(
            "feature service",
            problem is None,
            f"{service} ({len(candidate.features)} features)",
            _lineage(champion, "feature_service") if champion else "–",
            "resolvable in the feature store",
            problem or "",
        )
    )
    if config.require_beats_baselines:
        chance = candidate.tags.get("better_than_chance")
        checks.append(
            Check(
                "better than chance",
                chance != "false",
                chance or "unknown",
                "–",
                {
                    "auc": "AUC above 0.5 beyond the noise",
                    "gini": "Gini above 0 beyond the noise",
                    "qini": "policy no worse than the logging policy, Qini above 0",
                }[candidate.kind]
                + " on the validation cutoff",
            )
        )
        beats = candidate.tags.get("beats_baselines") == "true"
        checks.append(
            Check(
                "beats baselines",
                beats,
                candidate.tags.get("beats_baselines", "unknown"),
                "–",
                "no baseline better beyond the noise at training",
            )
        )
    seen = [_lineage(item, "cutoff_valid") for item in (candidate, champion) if item is not None]
    unseen = all(
        value is not None and pd.Timestamp(value, tz="UTC") < evaluation_set.cutoff for value in seen
    )
    checks.append(
        Check(
            "held-out cutoff",
            unseen,
            str(_lineage(candidate, "cutoff_valid")),
            str(_lineage(champion, "cutoff_valid") if champion else "–"),
            f"validation cutoffs before {evaluation_set.cutoff.date()}",
        )
    )
    return checks


TRAINING_RUN = "training run"


def training_run_check(problem: str | None) -> Check:
    """The candidate came from a training that completed: run FINISHED, lineage tags complete."""
    return Check(
        TRAINING_RUN,
        problem is None,
        "complete" if problem is None else "incomplete",
        "–",
        "a FINISHED training run and every lineage tag on the version",
        problem or "",
    )


def _short(text: str | None, width: int = 48) -> str:
    if not text:
        return "–"
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass
class PromotionResult:
    """What ``promote`` decided and why."""

    task: str
    model: str
    candidate: str
    champion_before: str | None
    champion_after: str | None
    moved: bool
    forced: bool
    gate_passed: bool
    decision: str
    checks: list[Check] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # "candidate"/"champion" -> summary
    evaluation_cutoff: str | None = None
    evaluation_run_id: str | None = None
    entry: AuditEntry | None = None

    @property
    def exit_code(self) -> int:
        """0 when the candidate is champion afterwards, 1 when the gate refused it."""
        return 0 if self.champion_after == self.candidate else 1

    def to_dict(self) -> dict[str, object]:
        return {
            "task": self.task,
            "model": self.model,
            "candidate": self.candidate,
            "champion_before": self.champion_before,
            "champion_after": self.champion_after,
            "moved": self.moved,
            "forced": self.forced,
            "gate_passed": self.gate_passed,
            "decision": self.decision,
            "evaluation_cutoff": self.evaluation_cutoff,
            "evaluation_run_id": self.evaluation_run_id,
            "metrics": self.metrics,
            "checks": [check.__dict__ for check in self.checks],
            "audit": self.entry.model_dump() if self.entry else None,
        }


def resolve_candidate(client: mlflow.MlflowClient, name: str, version: str | None) -> str:
    """The explicit version, else ``@challenger``; PromotionError when neither exists."""
    if version is None:
        found = alias_version(client, name, CHALLENGER)
        if found is None:
            raise PromotionError(f"{name} has no challenger; pass --version")
        return found
    try:
        return str(client.get_model_version(name, str(version)).version)
    except MlflowException as error:
        raise PromotionError(f"{name} has no version {version}") from error


def _evaluate_pair(
    client: mlflow.MlflowClient,
    task: str,
    name: str,
    candidate: str,
    champion: str | None,
    evaluation_set_for: EvaluationSetFor,
    artifact_root: str | None,
) -> tuple[ModelEvaluation, ModelEvaluation | None, EvaluationSet, list[str], str]:
    cand_model, cand = load_version(client, name, candidate)
    horizon = int(_lineage(cand, "horizon_days") or 0)
    if horizon <= 0:
        raise PromotionError(f"{name} version {candidate} records no horizon; it was not logged by training")
    evaluation_set = evaluation_set_for(task, horizon)
    pair = load_version(client, name, champion) if champion else None
    if cand.kind == "qini":
        targets = shared_actions(cand, pair[1] if pair else None, evaluation_set)
    else:
        targets = [
            t for t in cand.targets if t in evaluation_set.labels and (pair is None or t in pair[1].targets)
        ]
    experiment_id = ensure_experiment(client, registry.get(task).experiment, artifact_root)
    tags = {
        "cxpredict.kind": "promotion",
        "task": task,
        "candidate_version": candidate,
        "champion_version": champion or "none",
        "candidate_run_id": cand.tags.get("run_id", ""),
        "evaluation_cutoff": evaluation_set.cutoff.isoformat(),
        **process_tags(),  # a killed gate's run is marked FAILED by the next train
    }
    run_name = f"promote-{task}-v{candidate}-vs-{'v' + champion if champion else 'none'}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        evaluate = evaluate_uplift if cand.kind == "qini" else evaluate_version
        evaluate(cand_model, cand, evaluation_set, targets, "candidate")
        if pair is not None:
            evaluate(pair[0], pair[1], evaluation_set, targets, "champion")
    return cand, (pair[1] if pair else None), evaluation_set, targets, run.info.run_id


def promote(
    target: TrackingTarget,
    task: str,
    evaluation_set: EvaluationSetFor,
    version: str | None = None,
    *,
    force: bool = False,
    reason: str | None = None,
    actor: str | None = None,
    config: GateConfig | None = None,
    feature_check: FeatureCheck = columns_present,
) -> PromotionResult:
    """Gate the candidate against the champion and move ``champion`` if it passes (or if forced).

    A refused promotion moves nothing; the gate outcome is still logged (the promotion run, and
    the candidate's ``last_gate`` version tag). ``force`` requires a ``reason``, which is recorded.
    """
    if force and not (reason and reason.strip()):
        raise PromotionError("--force needs --reason: the audit trail records why the gate was overridden")
    name = registry.get(task).model_name
    actor = actor or default_actor()
    config = config or GateConfig()
    with tracking_session(target) as client:
        candidate = resolve_candidate(client, name, version)
        problem = registered_problem(client, name, candidate)
        for _ in range(config.max_attempts):
            champion = alias_version(client, name, CHAMPION)
            unmoved = partial(
                PromotionResult,
                task=task,
                model=name,
                candidate=candidate,
                champion_before=champion,
                champion_after=champion,
                moved=False,
            )
            if champion == candidate:
                return unmoved(
                    forced=False,
                    gate_passed=True,
                    decision=f"version {candidate} is already champion; nothing moved",
                )
            if problem is not None and not force:
                result = unmoved(
                    forced=False,
                    gate_passed=False,
                    decision=f"refused: version {candidate} is not usable: {problem}; "
                    f"champion stays {champion or 'unset'}",
                    checks=[training_run_check(problem)],
                )
                _record_gate(client, name, result)
                return result
            cand, champ, evaluated, targets, run_id = _evaluate_pair(
                client, task, name, candidate, champion, evaluation_set, target.artifact_root
            )
            checks = [
                training_run_check(problem),
                *gate_checks(task, cand, champ, evaluated, targets, config, feature_check),
            ]
            passed = all(check.passed for check in checks)
            metrics = {
                "candidate": cand.result.metrics,
                **({"champion": champ.result.metrics} if champ else {}),
            }
            result = unmoved(
                forced=force,
                gate_passed=passed,
                decision="",
                checks=checks,
                metrics=metrics,
                evaluation_cutoff=evaluated.cutoff.date().isoformat(),
                evaluation_run_id=run_id,
            )
            _record_gate(client, name, result)
            if not passed and not force:
                failed = ", ".join(check.name for check in checks if not check.passed)
                result.decision = (
                    f"refused: version {candidate} failed {failed}; champion stays {champion or 'unset'}"
                )
                return result
            why = reason.strip() if reason else "passed the gate"
            details = {
                "gate_passed": passed,
                f"candidate_{cand.kind}": cand.result.metrics[cand.kind],
                f"champion_{cand.kind}": champ.result.metrics[cand.kind] if champ else None,
                **({"candidate_ece": cand.result.metrics["ece"]} if cand.kind == "auc" else {}),
                "evaluation_cutoff": result.evaluation_cutoff,
                "evaluation_run_id": run_id,
            }
            try:
                entry = move_alias(
                    client,
                    name,
                    CHAMPION,
                    candidate,
                    action="force" if force and not passed else "promote",
                    reason=why,
                    actor=actor,
                    expected_from=champion,
                    forced=force,
                    details=details,
                    lock_timeout_s=config.lock_timeout_s,
                )
            except AliasConflict:
                continue
            result.moved, result.champion_after, result.entry = True, candidate, entry
            verb = "forced" if force and not passed else "promoted"
            result.decision = f"{verb}: champion moved from {champion or 'unset'} to version {candidate}"
            return result
    raise PromotionError(f"{name}@champion kept moving during {config.max_attempts} gate runs; retry")


def _record_gate(client: mlflow.MlflowClient, name: str, result: PromotionResult) -> None:
    summary = {
        "at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        "passed": result.gate_passed,
        "champion": result.champion_before,
        "failed": [check.name for check in result.checks if not check.passed],
        "evaluation_run_id": result.evaluation_run_id,
    }
    client.set_model_version_tag(name, result.candidate, "last_gate", json.dumps(summary))
    if result.evaluation_run_id is None:
        return  # refused before evaluating: there is no promotion run to hold the details
    rows = [check.__dict__ for check in result.checks]
    record = {"checks": rows, "metrics": result.metrics, "cutoff": result.evaluation_cutoff}
    client.log_dict(result.evaluation_run_id, record, "gate.json")


@dataclass
class RollbackResult:
    task: str
    model: str
    champion_before: str | None
    champion_after: str | None
    moved: bool
    decision: str
    entry: AuditEntry | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.moved else 1


def rollback(
    target: TrackingTarget | str,
    task: str,
    *,
    reason: str | None = None,
    actor: str | None = None,
    lock_timeout_s: float = 30.0,
    max_attempts: int = 3,
) -> RollbackResult:
    """Move ``champion`` back to the previous champion in the audit trail's line of succession
    (a rollback pops: two rollbacks after two promotions restore the first champion)."""
    name = registry.get(task).model_name
    uri = target.tracking_uri if isinstance(target, TrackingTarget) else target
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    for _ in range(max_attempts):
        current = alias_version(client, name, CHAMPION)
        stack = alias_stack(read_history(client, name), CHAMPION)
        if current is None:
            return RollbackResult(task, name, None, None, False, f"refused: {name} has no champion")
        if not stack or stack[-1] != current:
            return RollbackResult(
                task,
                name,
                current,
                current,
                False,
                f"refused: champion {current} was not set through the audit trail; "
                "use promote --version V --force --reason",
            )
        if len(stack) < 2:
            return RollbackResult(
                task,
                name,
                current,
                current,
                False,
                f"refused: version {current} is the first recorded champion; nothing to roll back to",
            )
        previous = stack[-2]
        try:
            client.get_model_version(name, previous)
        except MlflowException:
            return RollbackResult(
                task, name, current, current, False, f"refused: previous champion {previous} no longer exists"
            )
        try:
            entry = move_alias(
                client,
                name,
                CHAMPION,
                previous,
                action="rollback",
                reason=reason or f"rollback from version {current}",
                actor=actor,
                expected_from=current,
                lock_timeout_s=lock_timeout_s,
            )
        except AliasConflict:
            continue
        return RollbackResult(
            task,
            name,
            current,
            previous,
            True,
            f"rolled back: champion moved from {current} to version {previous}",
            entry,
        )
    raise PromotionError(f"{name}@champion kept moving during {max_attempts} rollback attempts; retry")
