"""Uplift: how much each action raises the chance of a purchase within H days of a decision.

A churn score says who is at risk, not who can be won: the customers worth an action are those
whose behaviour the action changes. Learned from the decision log (``features.decision_log``: the
service's own decisions, or a generated world's campaign history), where each decision's *arm* is
the first action given or ``control`` (a holdout decision, or no action).

Rows: one per customer and cutoff, the customer's first decision in the month after the cutoff
(features are those of the cutoff's snapshot, so they precede the decision), with a label window
(decision, decision + H] that has ended by ``as_of``. Label ``purchased``: a purchase in that window.

Model: per action, a doubly robust learner (EconML's ``DRLearner``) with LightGBM for the outcome
and propensity nuisances (cross-fitted) and for the final stage; the final stage's boosters are the
``uplift_<action>`` heads, so the registered model needs only LightGBM to serve. Judged on the
held-out cutoff by the Qini coefficient per action (scikit-uplift's ``qini_auc_score``; treated
rows of the action against control rows) with bootstrap intervals, against random targeting (a Qini
of 0) and against targeting by risk (ranking by the predicted chance of *not* buying without
action, from a LightGBM fitted on the control rows), and on generated worlds against the oracle's
ranking by the true uplift.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from training import labels as L
from training.cutoffs import utc_timestamp
from training.model_bundle import feature_matrix
from training.tasks import TaskLabels
from training.tasks.common import rounded

NAME = "uplift"
EXPLAINED = False
LABEL, ARM, PROPENSITY = "purchased", "arm", "propensity"
CONTROL = "control"
PREFIX = "uplift_"
POLICY = "policy"
"""Target of the off-policy estimates of the model's policy (every row, every arm)."""
NO_ACTION_PURCHASE = "purchase_without_action"
POOLED = "all_actions"
"""Target of the validation check pooled over actions (the mean Qini's interval decides a first
champion: one action alone is rarely beyond the noise of a single cutoff)."""
MIN_ARM_ROWS = 100
"""Rows an action needs in each split (and control likewise) to be learned."""
RESAMPLES = 200


class Block(BaseModel):
    expected_uplift: dict[str, float] = Field(
        description="Per action: expected change in the probability of a purchase within the horizon "
        "if the action is taken rather than none."
    )
    best_action: str | None = Field(description="The action with the largest positive uplift, if any.")
    horizon_days: int


def output(action: str) -> str:
    return f"{PREFIX}{action}"


def labels(
    tables: Mapping[str, pd.DataFrame | None],
    cutoffs: Sequence[pd.Timestamp],
    horizon_days: int,
    as_of: pd.Timestamp,
    model_spec: Mapping[str, object] | None = None,
) -> TaskLabels:
    """``purchased`` within H of each customer's first decision in the month after each cutoff, with
    the decision's ``arm`` and ``propensity``."""
    logged = tables.get(L.TREATMENTS)
    if logged is None or len(logged) == 0:
        raise L.LabelsUnavailable(
            NAME, "no logged decisions: uplift is learned from the decision log (/decide and /outcomes)"
        )
    if not L.present(tables, "transactions"):
        raise L.LabelsUnavailable(NAME, "the transactions source is required and is absent or empty")
    as_of = utc_timestamp(as_of)
    seen = L.visible(tables, as_of)
    horizon = pd.Timedelta(days=horizon_days)
    stamps = pd.DatetimeIndex([utc_timestamp(c) for c in cutoffs]).as_unit("us")
    decided = logged.assign(
        timestamp=pd.to_datetime(logged["timestamp"], utc=True).astype("datetime64[us, UTC]")
    )
    decided = decided.loc[decided["timestamp"] + horizon <= as_of]
    slot = stamps.searchsorted(decided["timestamp"], side="right") - 1
    decided = decided.loc[slot >= 0].assign(event_timestamp=stamps[slot[slot >= 0]])
    ends = pd.Series([*stamps[1:], stamps[-1] + pd.DateOffset(months=1)], index=stamps)
    decided = decided.loc[decided["timestamp"] < decided["event_timestamp"].map(ends)]
    decided = decided.sort_values(["customer_id", "event_timestamp", "timestamp"], kind="stable")
    decided = decided.drop_duplicates(["customer_id", "event_timestamp"])
    entity = decided[["customer_id", "timestamp"]].rename(columns={"timestamp": "event_timestamp"})
    entity = entity.reset_index(drop=True)
    first = L.first_after(entity, L.purchases(seen))["at"]
    bought = (first.notna() & (first <= entity["event_timestamp"] + horizon)).to_numpy()
    frame = pd.DataFrame(
        {
            "customer_id": decided["customer_id"].astype(object).to_numpy(),
            "event_timestamp": decided["event_timestamp"].to_numpy(),
            LABEL: bought.astype(np.int64),
            ARM: decided["arm"].astype(object).to_numpy(),
            PROPENSITY: decided["propensity"].to_numpy(dtype=float),
        }
    )
    if frame.empty:
        raise L.LabelsUnavailable(NAME, "no logged decision falls in the months after the training cutoffs")
    arms = sorted(set(frame[ARM]) - {CONTROL})
    if CONTROL not in set(frame[ARM]) or not arms:
        raise L.LabelsUnavailable(NAME, "the decision log needs both control (holdout) decisions and actions")
    return TaskLabels(frame, (LABEL, ARM, PROPENSITY), {}, {"arms": arms})


def qini(y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> float:
    from sklift.metrics import qini_auc_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return float(qini_auc_score(y, score, treated))


def bootstrap_qini(
    y: np.ndarray,
    treated: np.ndarray,
    scores: Mapping[str, np.ndarray],
    seed: int,
    resamples: int = RESAMPLES,
    level: float = 0.95,
) -> dict[str, dict]:
    """Qini of each ranking (``value``, ``low``, ``high``) and of ``model`` minus each other ranking
    (``model_vs_<name>``: ``diff``, ``low``, ``high``) on the same resampled rows (customers drawn
    with replacement within treated and within control); ``draws`` holds each ranking's resampled
    values, so the Qinis of several actions can be pooled."""
    rng = np.random.default_rng(seed)
    treated_rows, control_rows = np.flatnonzero(treated), np.flatnonzero(~treated)
    draws: dict[str, list[float]] = {name: [] for name in scores}
    for _ in range(resamples):
        rows = np.concatenate(
            [rng.choice(treated_rows, treated_rows.size), rng.choice(control_rows, control_rows.size)]
        )
        for name, score in scores.items():
            draws[name].append(qini(y[rows], score[rows], treated[rows]))
    tail = (1 - level) / 2
    out: dict[str, dict] = {"draws": {name: np.asarray(values) for name, values in draws.items()}}
    point = {name: qini(y, score, treated) for name, score in scores.items()}
    for name, values in list(out["draws"].items()):
        out[name] = {"value": point[name], "low": float(np.quantile(values, tail)),
                     "high": float(np.quantile(values, 1 - tail))}  # fmt: skip
        if name != "model":
            diff = out["draws"]["model"] - values
            out[f"model_vs_{name}"] = {"diff": point["model"] - point[name], "low": float(np.quantile(diff, tail)),
                                       "high": float(np.quantile(diff, 1 - tail))}  # fmt: skip
    return out


def policy_choice(
    predicted: Mapping[str, np.ndarray], actions: Sequence[str], control: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The policy a model implies: per row the action of largest predicted uplift when it is above
    zero, else control (no action); with its expected purchase probability (control's plus the
    chosen uplift)."""
    effects = np.column_stack([predicted[output(a)] for a in actions])
    best = np.argmax(effects, axis=1)
    gain = effects[np.arange(len(best)), best]
    chosen = np.where(gain > 0, np.asarray(actions, dtype=object)[best], CONTROL)
    return chosen, np.clip(control + np.where(gain > 0, gain, 0.0), 0, 1)


def logged_propensities(arms: np.ndarray, logged: np.ndarray) -> np.ndarray:
    """Each row's probability of the arm it got: the logged propensity, else (control decisions,
    whose assignment is a random or hash-based group) the arm's share of the rows."""
    share = pd.Series(arms).map(pd.Series(arms).value_counts(normalize=True)).to_numpy(dtype=float)
    return np.where(np.isfinite(logged) & (logged > 0), logged, share)


def off_policy_values(
    y: np.ndarray,
    arms: np.ndarray,
    propensity: np.ndarray,
    chosen: np.ndarray,
    expected_chosen: np.ndarray,
    expected_logged: np.ndarray,
    seed: int,
    resamples: int = RESAMPLES,
) -> dict[str, float]:
    """The value (purchase rate within the horizon) of the policy ``chosen`` estimated from logged
    decisions: inverse propensity (``ipw``), self-normalised (``snipw``) and doubly robust (``dr``,
    with the model's expected outcomes), each with a bootstrap interval over rows; the logging
    policy's own value (the observed rate) and ``policy_vs_logging_low``: the DR lower bound minus
    the logging value (a candidate whose lower bound is below the current policy is refused)."""
    y = np.asarray(y, dtype=float)
    match = (np.asarray(arms) == np.asarray(chosen)).astype(float)
    weight = match / propensity

    def estimates(rows: np.ndarray) -> tuple[float, float, float, float]:
        w, yy = weight[rows], y[rows]
        ipw = float(np.mean(w * yy))
        snipw = float(np.sum(w * yy) / np.sum(w)) if np.sum(w) > 0 else float("nan")
        dr = float(np.mean(expected_chosen[rows] + w * (yy - expected_logged[rows])))
        return ipw, snipw, dr, float(np.mean(yy))

    rng = np.random.default_rng(seed)
    every = np.arange(len(y))
    draws = np.asarray([estimates(rng.choice(every, len(every))) for _ in range(resamples)])
    point = estimates(every)
    out: dict[str, float] = {}
    for j, name in enumerate(("ope_ipw", "ope_snipw", "ope_dr", "logging_value")):
        out[name] = point[j]
        out[f"{name}_low"], out[f"{name}_high"] = (
            float(v) for v in np.nanquantile(draws[:, j], [0.025, 0.975])
        )
    out["policy_vs_logging_low"] = out["ope_dr_low"] - point[3]
    out["matched_rows"] = float(match.sum())
    return out


def true_gain_area(true_uplift: np.ndarray, score: np.ndarray) -> float:
    """Area between the cumulative *true* uplift of targeting in ``score`` order and random
    targeting, per customer squared: what a ranking is worth when each row's uplift is known
    (generated worlds), free of the outcome noise that makes realised Qini curves so wide."""
    tau = np.asarray(true_uplift, dtype=float)
    n = tau.size
    if n == 0:
        return float("nan")
    order = np.argsort(-np.asarray(score, dtype=float), kind="stable")
    gain = np.cumsum(tau[order])
    random = np.arange(1, n + 1) / n * tau.sum()
    return float(np.sum(gain - random) / n**2)


def _lgbm(kind: str, params, seed: int, **overrides):
    import lightgbm as lgb

    base = {
        "n_estimators": 200,
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_child_samples": max(params.min_data_in_leaf, 50),
        "subsample": params.bagging_fraction,
        "subsample_freq": 1,
        "colsample_bytree": params.feature_fraction,
        "reg_lambda": max(params.lambda_l2, 1.0),
        "max_bin": params.max_bin,
        "n_jobs": params.num_threads,
        "random_state": seed,
        "verbose": -1,
    } | overrides
    return (lgb.LGBMClassifier if kind == "classifier" else lgb.LGBMRegressor)(**base)


def fit(dataset, task_labels: TaskLabels, config):
    """One DR-learner over every action with enough rows; Qini on validation (what makes a first
    champion) and on the held-out cutoff (what the gate and the card report)."""
    from econml.dr import DRLearner

    from training.models import (
        METRIC_COLUMNS,
        FittedTask,
        ModelBundle,
        UpliftEvaluation,
        base_spec,
        metric_rows,
    )

    params, seed = config.lightgbm, config.seed
    train, valid, test = dataset.train, dataset.valid, dataset.test

    def arm_of(split) -> np.ndarray:
        return split.labels[ARM].astype(str).to_numpy()

    def counts(split, action: str) -> int:
        return int((arm_of(split) == action).sum())

    notes: list[str] = []
    actions = []
    for action in task_labels.extra["arms"]:
        if min(counts(s, action) for s in (train, valid, test)) >= MIN_ARM_ROWS:
            actions.append(action)
        else:
            notes.append(f"{action}: fewer than {MIN_ARM_ROWS} decisions in a split, not learned")
    if not actions or min(counts(s, CONTROL) for s in (train, valid, test)) < MIN_ARM_ROWS:
        raise L.LabelsUnavailable(
            NAME, f"too few decisions per arm (each split needs {MIN_ARM_ROWS} per arm)"
        )
    keep = np.isin(arm_of(train), [CONTROL, *actions])
    X_train = feature_matrix(train.X)[keep]
    y_train = train.labels[LABEL].to_numpy(dtype=int)[keep]
    T_train = arm_of(train)[keep]
    learner = DRLearner(
        model_propensity=_lgbm("classifier", params, seed, n_estimators=60, num_leaves=7),
        model_regression=_lgbm("classifier", params, seed),
        # pseudo-outcomes are inverse-propensity weighted and very noisy: a shallow, strongly
        # regularised final stage ranks better than a deep one
        model_final=_lgbm(
            "regressor",
            params,
            seed,
            n_estimators=100,
            num_leaves=4,
            reg_lambda=10.0,
            min_child_samples=max(300, len(y_train) // 50),
        ),  # fmt: skip
        discrete_outcome=True,
        categories=[CONTROL, *actions],
        cv=2,
        allow_missing=True,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learner.fit(y_train, T_train, X=X_train)
    boosters, heads = {}, []
    for action in actions:
        booster = learner.model_cate(T=action).booster_
        name = output(action)
        boosters[name] = booster
        treated = T_train == action
        ate = float(y_train[treated].mean() - y_train[T_train == CONTROL].mean()) if treated.any() else 0.0
        heads.append({"name": name, "kind": "effect", "output": name, "action": action, "prior": ate})
    bundle = ModelBundle({**base_spec(dataset, params), "heads": heads, "uplift_actions": actions}, boosters)

    control_train = T_train == CONTROL
    risk_model = _lgbm("classifier", params, seed, n_estimators=150)
    risk_model.fit(X_train[control_train], y_train[control_train])

    kept: list[UpliftEvaluation] = []

    def evaluate(split, tag: str) -> list[tuple]:
        arms, y = arm_of(split), split.labels[LABEL].to_numpy(dtype=int)
        predicted = bundle.outputs(split.X)
        risk = 1.0 - risk_model.predict_proba(feature_matrix(split.X))[:, 1]
        truth = None
        if split.oracle is not None and all(output(a) in split.oracle for a in actions):
            truth = split.oracle[[output(a) for a in actions]]
            truth = None if truth.isna().any().any() else truth
        rows, pooled = [], []
        for action in actions:
            subset = np.isin(arms, [CONTROL, action])
            treated = arms[subset] == action
            scores = {"model": predicted[output(action)][subset], "risk_targeting": risk[subset]}
            if truth is not None:
                scores["oracle"] = truth[output(action)].to_numpy(dtype=float)[subset]
            found = bootstrap_qini(y[subset], treated, scores, seed)
            pooled.append(found["draws"]["model"])
            if tag == "valid":
                rows += metric_rows(action, "model", {"valid_qini": found["model"]["value"]})
                continue
            kept.append(UpliftEvaluation(action, y[subset], treated, scores))
            for name in scores:
                rows += metric_rows(action, name, {"qini": found[name]["value"], "qini_low": found[name]["low"],
                                                   "qini_high": found[name]["high"]})  # fmt: skip
            for name in [n for n in scores if n not in ("model", "oracle")]:
                key = f"model_vs_{name}"
                rows += metric_rows(action, "model", {f"qini_vs_{name}_{part}": found[key][part]
                                                      for part in ("diff", "low", "high")})  # fmt: skip
            rows += metric_rows(action, "model", {"treated_rows": float(treated.sum()),
                                                  "control_rows": float((~treated).sum()),
                                                  "observed_uplift": float(y[subset][treated].mean() - y[subset][~treated].mean()),
                                                  "predicted_uplift": float(np.mean(predicted[output(action)]))})  # fmt: skip
            if truth is not None:
                true = truth[output(action)].to_numpy(dtype=float)
                best = true_gain_area(true, true)
                for name, score in (
                    ("model", predicted[output(action)]),
                    ("risk_targeting", risk),
                    ("oracle", true),
                ):
                    area = true_gain_area(true, score)
                    rows += metric_rows(action, name, {"true_gain": area,
                                                       "true_gain_ratio_to_oracle": area / best if best > 0 else float("nan")})  # fmt: skip
                rows += metric_rows(action, "model", {"true_uplift": float(true.mean())})
        control = 1.0 - risk
        chosen, expected = policy_choice(predicted, actions, control)
        expected_logged = control.copy()
        for action in actions:
            hit = arms == action
            expected_logged[hit] = np.clip(control[hit] + predicted[output(action)][hit], 0, 1)
        propensity = logged_propensities(arms, split.labels[PROPENSITY].to_numpy(dtype=float))
        found = off_policy_values(y, arms, propensity, chosen, expected, expected_logged, seed)
        prefix = "valid_" if tag == "valid" else ""
        rows += metric_rows(POLICY, "model", {f"{prefix}{k}": v for k, v in found.items()})
        if truth is not None and tag == "test":
            p0 = split.oracle[NO_ACTION_PURCHASE].to_numpy(dtype=float)
            gain = {CONTROL: np.zeros(len(y)), **{a: truth[output(a)].to_numpy(dtype=float) for a in actions}}
            true_chosen = np.array([gain[a][i] for i, a in enumerate(chosen)])
            none = np.zeros(len(y))
            true_logged = np.array([gain.get(a, none)[i] for i, a in enumerate(arms)])
            best = np.max(np.column_stack(list(gain.values())), axis=1)
            rows += metric_rows(POLICY, "model", {"true_value": float(np.mean(p0 + true_chosen)),
                                                  "true_logging_value": float(np.mean(p0 + true_logged)),
                                                  "true_oracle_value": float(np.mean(p0 + best))})  # fmt: skip
        if tag == "valid":
            draws = np.mean(pooled, axis=0)
            rows += metric_rows(POOLED, "model", {"qini_vs_chance_diff": float(np.mean(draws)),
                                                  "qini_vs_chance_low": float(np.quantile(draws, 0.025)),
                                                  "qini_vs_chance_high": float(np.quantile(draws, 0.975))})  # fmt: skip
        return rows

    results = evaluate(valid, "valid") + evaluate(test, "test")
    metrics = pd.DataFrame(results, columns=METRIC_COLUMNS)
    for head in heads:
        found = metrics.loc[
            (metrics["target"] == head["action"]) & (metrics["metric"] == "valid_qini"), "value"
        ]
        head["valid_qini"] = {"lightgbm": float(found.iloc[0])} if len(found) else {}
    return FittedTask(
        task=dataset.task,
        bundle=bundle,
        metrics=metrics,
        evaluations=[],
        primary=actions[0],
        params={f"lgbm_{key}": value for key, value in params.model_dump().items()}
        | {"learner": "econml.DRLearner"},
        notes=notes,
        gate_metric="qini",
        uplift=kept,
    )


def oracle(exact: pd.DataFrame, transactions_only: bool) -> pd.DataFrame:
    """The true uplift of each action and the purchase probability without any (generated worlds
    with a campaign history, at its horizon)."""
    columns = [c for c in exact.columns if c.startswith(PREFIX)]
    if not columns:
        return exact[["customer_id"]]
    return exact[["customer_id", *columns]].assign(**{NO_ACTION_PURCHASE: exact["purchase"]})


def blocks(outputs: Mapping[str, np.ndarray], drivers: list[list[dict]], spec: Mapping) -> list[dict]:
    actions = list(spec.get("uplift_actions", ()))
    horizon = int(spec["horizon_days"])
    n = len(next(iter(outputs.values()))) if outputs else 0
    out = []
    for i in range(n):
        uplift = {action: rounded(outputs[output(action)][i]) for action in actions}
        best = max(uplift, key=uplift.get) if uplift else None
        out.append({"expected_uplift": uplift, "best_action": best if best and uplift[best] > 0 else None,
                    "horizon_days": horizon})  # fmt: skip
    return out


def prior(spec: Mapping) -> dict:
    uplift = {head["action"]: rounded(head["prior"]) for head in spec["heads"] if head["kind"] == "effect"}
    best = max(uplift, key=uplift.get) if uplift else None
    return {"expected_uplift": uplift, "best_action": best if best and uplift[best] > 0 else None,
            "horizon_days": int(spec["horizon_days"])}  # fmt: skip
