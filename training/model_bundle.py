"""A trained task model as plain files: its heads (LightGBM boosters or linear baselines),
calibrators and the feature schema.

This module ships inside every logged MLflow model (``code_paths``), so it imports only numpy,
pandas, lightgbm and (for linear heads) scikit-learn: the model loads wherever those are installed.
``ModelBundle.predict`` is the single implementation of a task's outputs, used in-process and by the
pyfunc wrapper alike.

A head's ``family`` says what computes it: ``lightgbm`` (the default), or a linear baseline
(``logistic``, ``rf_heuristic``) that won on the validation cutoff — a scikit-learn pipeline over the
head's ``columns`` whose drivers are its exact per-feature terms of the log-odds.

Folder layout: ``spec.json`` (task, features, categorical levels, heads, calibrators), one
``<head>.txt`` LightGBM model file per tree head and one ``<head>.joblib`` pipeline per linear head.
"""

from __future__ import annotations

import ctypes
import json
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

SPEC_FILE = "spec.json"
FORMAT_VERSION = 1
FORMULA_FAMILIES = ("run_rate",)
"""Head families computed from the spec alone (no model file): ``run_rate`` = ``column`` × ``factor``."""


def prepare_features(
    frame: pd.DataFrame, feature_names: Sequence[str], categorical_levels: Mapping[str, Sequence[str]]
) -> pd.DataFrame:
    """Model inputs in a fixed order: numbers as float64, categoricals as pandas ``category`` with the
    training levels (unseen values become missing). Absent feature columns are all-missing."""
    columns = {}
    for name in feature_names:
        values = frame[name] if name in frame else pd.Series(np.nan, index=frame.index)
        if name in categorical_levels:
            text = values.astype(object).where(values.notna(), None)
            columns[name] = pd.Categorical(text, categories=list(categorical_levels[name]))
        else:
            columns[name] = pd.to_numeric(values, errors="coerce").astype(np.float64)
    return pd.DataFrame(columns, index=frame.index)


def feature_matrix(X: pd.DataFrame) -> np.ndarray:
    """A prepared frame (:func:`prepare_features`) as floats: categoricals as their level position
    (what LightGBM does with a pandas category, and what :meth:`ModelBundle.prepare_matrix` builds
    when serving), missing as NaN. For learners that take plain arrays."""
    matrix = np.empty((len(X), X.shape[1]), dtype=np.float64)
    for j, name in enumerate(X.columns):
        if isinstance(X[name].dtype, pd.CategoricalDtype):
            codes = X[name].cat.codes.to_numpy()
            matrix[:, j] = np.where(codes < 0, np.nan, codes)
        else:
            matrix[:, j] = X[name].to_numpy(dtype=float)
    return matrix


def apply_calibrator(calibrator: Mapping[str, object] | None, probability: np.ndarray) -> np.ndarray:
    """Map raw probabilities through an isotonic (piecewise linear) or Platt calibrator."""
    if calibrator is None:
        return probability
    if calibrator["kind"] == "isotonic":
        return np.interp(probability, np.asarray(calibrator["x"]), np.asarray(calibrator["y"]))
    if calibrator["kind"] == "platt":
        clipped = np.clip(probability, 1e-7, 1 - 1e-7)
        logit = np.log(clipped / (1 - clipped))
        return 1.0 / (1.0 + np.exp(-(float(calibrator["a"]) * logit + float(calibrator["b"]))))
    raise ValueError(f"unknown calibrator kind {calibrator['kind']!r}")


def strongest(contributions: np.ndarray, k: int) -> np.ndarray:
    """Per row, the column positions of the ``k`` largest |contributions|, strongest first (ties
    keep column order)."""
    return np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, : min(k, contributions.shape[1])]


def top_contributions(
    contributions: np.ndarray, X: pd.DataFrame, feature_names: Sequence[str], k: int
) -> pd.DataFrame:
    """Top-k features per row by |SHAP contribution| (the last column of ``contributions`` is the
    bias and is ignored). Long format: row (position), rank (1 = strongest), feature, value, impact.
    Impacts are in the model's raw score units (log-odds for binary models)."""
    per_feature = contributions[:, : len(feature_names)]
    order = strongest(per_feature, k)
    k = order.shape[1]
    rows = np.repeat(np.arange(len(per_feature)), k)
    columns = order.ravel()
    values = X.astype(object).where(X.notna(), None).to_numpy()
    return pd.DataFrame(
        {
            "row": rows,
            "rank": np.tile(np.arange(1, k + 1), len(per_feature)),
            "feature": np.asarray(feature_names, dtype=object)[columns],
            "value": values[rows, columns],
            "impact": per_feature[rows, columns],
        }
    )


def _owner(column: str, features: Sequence[str]) -> str:
    """The input feature a pipeline's output column comes from: itself, its missing indicator, or
    one of its one-hot levels (the longest feature name that prefixes ``<feature>_<level>``)."""
    if column in features:
        return column
    if column.startswith("missingindicator_") and column[len("missingindicator_") :] in features:
        return column[len("missingindicator_") :]
    return max((f for f in features if column.startswith(f + "_")), key=len)


def utc_day(moment: object = None) -> pd.Timestamp:
    """Midnight UTC of ``moment`` (default: now); a naive moment is taken as UTC."""
    stamp = pd.Timestamp("now", tz="UTC") if moment is None else pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.normalize()


def seasonal_index(season: Mapping[str, object], moment: object = None) -> float | None:
    """Activity of the window ``moment`` … + H a year (or whole years) earlier, over the trend then
    (mean activity of the year centred on it; see ``training.season``); ``None`` when the profile does
    not hold that window and its year, or the window's activity is too low to measure."""
    daily = np.asarray(season["daily"], dtype=np.float64)
    horizon, year = int(season["horizon_days"]), int(season["year_days"])
    half = int(season["trend_half_days"])
    start = int((utc_day(moment) - utc_day(season["origin"])).days) - year
    centre = start + horizon // 2
    while centre + half + 1 > len(daily):
        start, centre = start - year, centre - year
    if centre - half < 0:
        return None
    count = float(daily[start : start + horizon].sum())
    if count < float(season["min_window_events"]):
        return None
    trend = float(daily[centre - half : centre + half + 1].mean()) * horizon
    return count / trend


def seasonal_ratio(season: Mapping[str, object] | None, moment: object = None) -> float:
    """The intensity ratio ``k`` of the window ``moment`` … + H (default: now) to the calibration
    window: the ratio of their seasonal indices (:func:`seasonal_index`); 1 without a profile or when
    the window's index cannot be measured."""
    if not season:
        return 1.0
    index = seasonal_index(season, moment)
    reference = seasonal_index(season, season["calibrated_at"])
    return 1.0 if index is None or reference is None else index / reference


def seasonal(probability: np.ndarray, form: str, ratio: float) -> np.ndarray:
    """A calibrated probability moved to a window whose intensity is ``ratio`` times the calibration
    window's: an event that ``occurs`` (``1 - (1 - p) ** k``) or an ``absent`` one (``p ** k``)."""
    if ratio == 1.0:
        return probability
    if form == "occurs":
        return 1.0 - np.power(1.0 - probability, ratio)
    if form == "absent":
        return np.power(probability, ratio)
    raise ValueError(f"unknown seasonal form {form!r}")


def risk_bands(probability: np.ndarray, bounds: Sequence[float]) -> np.ndarray:
    """ "low" / "medium" / "high" for probabilities below ``bounds[0]``, below ``bounds[1]``, above."""
    band = np.select([probability >= bounds[1], probability >= bounds[0]], ["high", "medium"], "low")
    return band.astype(object)


class RowPredictor:
    """One booster's single-row fast path: LightGBM's C API ``LGBM_BoosterPredictForMatSingleRowFast``,
    which the Python package does not wrap. ``Booster.predict`` parses its parameters and builds a
    predictor on every call, most of the cost of scoring one customer; here that setup (a FastConfig)
    happens once per thread (LightGBM serialises the callers of one FastConfig). The answer is
    ``Booster.predict``'s for the same row, in the same shape. The FastConfigs are freed with this
    object, and the booster is kept alive until they are."""

    def __init__(self, booster: lgb.Booster) -> None:
        self.booster = booster
        self.width = booster.num_feature()
        self._outputs = booster.num_model_per_iteration()
        self._iterations = booster.best_iteration if booster.best_iteration > 0 else -1
        self._local = threading.local()
        self._handles: list[ctypes.c_void_p] = []
        self._guard = threading.Lock()
        weakref.finalize(self, _free_fast_configs, self._handles, booster)

    def _config(self) -> ctypes.c_void_p:
        handle = getattr(self._local, "handle", None)
        if handle is None:
            handle = ctypes.c_void_p()
            lgb.basic._safe_call(
                lgb.basic._LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                    self.booster._handle,
                    ctypes.c_int(lgb.basic._C_API_PREDICT_NORMAL),
                    ctypes.c_int(0),
                    ctypes.c_int(self._iterations),
                    ctypes.c_int(lgb.basic._C_API_DTYPE_FLOAT64),
                    ctypes.c_int32(self.width),
                    lgb.basic._c_str("num_threads=1"),
                    ctypes.byref(handle),
                )
            )
            with self._guard:
                self._handles.append(handle)
            self._local.handle = handle
        return handle

    def predict(self, X: np.ndarray) -> np.ndarray:
        """``Booster.predict(X)`` for a one-row matrix of ``width`` columns."""
        row = np.ascontiguousarray(X, dtype=np.float64).reshape(-1)
        if row.size != self.width:
            raise ValueError(f"expected one row of {self.width} features, got shape {np.shape(X)}")
        out = np.empty(self._outputs, dtype=np.float64)
        length = ctypes.c_int64()
        lgb.basic._safe_call(
            lgb.basic._LIB.LGBM_BoosterPredictForMatSingleRowFast(
                self._config(),
                row.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                ctypes.byref(length),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            )
        )
        return out.reshape(1, -1) if self._outputs > 1 else out


def _free_fast_configs(handles: list[ctypes.c_void_p], booster: lgb.Booster) -> None:
    """Free the FastConfigs; holds ``booster`` (the finaliser's argument) until they are gone."""
    for handle in handles:
        lgb.basic._safe_call(lgb.basic._LIB.LGBM_FastConfigFree(handle))
    handles.clear()


class ModelBundle:
    """Boosters + calibrators + feature schema of one task; ``spec`` is JSON-serialisable.

    ``spec["heads"]`` lists the models; each head has ``name``, ``kind`` (binary | quantile |
    multiclass | regression: a mean, times its ``scale`` | effect: a signed difference, e.g. an
    action's uplift, unclipped) and ``output`` (column name or, for multiclass, a prefix), plus ``calibrator``
    (binary), ``alpha`` (quantile) or ``classes`` and ``top`` (multiclass), and ``prior``: the
    training population's value (positive rate, days quantile, class shares) for cold starts.
    Unmet-needs heads also carry ``need`` (the category), and ``spec["needs"]`` maps need -> column.
    ``spec["shortfalls"]`` (optional) derives outputs ``max(of - minus, 0)`` from two other outputs.
    ``spec["season"]`` (optional) is the activity profile of ``training.season``; a binary head with a
    ``season`` form (``occurs`` | ``absent``) moves its calibrated probability to the predicted window.
    """

    def __init__(
        self,
        spec: Mapping[str, object],
        boosters: Mapping[str, lgb.Booster],
        estimators: Mapping[str, object] | None = None,
    ) -> None:
        self.estimators = dict(estimators or {})
        formulas = {head["name"] for head in spec["heads"] if head.get("family") in FORMULA_FAMILIES}
        missing = {head["name"] for head in spec["heads"]} - set(boosters) - set(self.estimators) - formulas
        if missing:
            raise ValueError(f"no booster or estimator for heads {sorted(missing)}")
        self.spec = dict(spec)
        self.boosters = dict(boosters)

    @property
    def task(self) -> str:
        return str(self.spec["task"])

    @property
    def feature_names(self) -> list[str]:
        return list(self.spec["features"])

    def head(self, name: str) -> Mapping[str, object]:
        for head in self.spec["heads"]:
            if head["name"] == name:
                return head
        raise KeyError(name)

    def prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        return prepare_features(frame, self.feature_names, self.spec["categorical_levels"])

    def prepare_matrix(self, columns: Mapping[str, Sequence[object]], n: int) -> np.ndarray:
        """The same inputs as :meth:`prepare` as one float matrix, from plain columns (lists with None
        for missing): categoricals become their level's position (what LightGBM makes of a pandas
        category), unseen levels NaN. The fast path for a few rows, where pandas costs milliseconds."""
        X = np.full((n, len(self.feature_names)), np.nan)
        levels = self._level_codes
        for j, name in enumerate(self.feature_names):
            values = columns.get(name)
            if values is None:
                continue
            codes = levels.get(name)
            if codes is None:
                X[:, j] = [np.nan if value is None else value for value in values]
            else:
                X[:, j] = [codes.get(value, np.nan) for value in values]
        return X

    @property
    def _level_codes(self) -> dict[str, dict[object, float]]:
        cached = self.__dict__.get("_codes")
        if cached is None:
            cached = {
                name: {level: float(code) for code, level in enumerate(levels)}
                for name, levels in self.spec["categorical_levels"].items()
            }
            self.__dict__["_codes"] = cached
        return cached

    def family(self, name: str) -> str:
        return str(self.head(name).get("family", "lightgbm"))

    def _frame(self, X: pd.DataFrame | np.ndarray) -> pd.DataFrame:
        """Prepared inputs as a frame with categorical values (what a linear head's pipeline reads)."""
        if isinstance(X, pd.DataFrame):
            return X
        frame = pd.DataFrame(X, columns=self.feature_names)
        for name, levels in self.spec["categorical_levels"].items():
            codes = frame[name].to_numpy()
            known = np.isfinite(codes)
            values = np.full(len(codes), None, dtype=object)
            values[known] = np.asarray(levels, dtype=object)[codes[known].astype(np.int64)]
            frame[name] = pd.Categorical(values, categories=list(levels))
        return frame

    def _linear_inputs(self, name: str, X: pd.DataFrame | np.ndarray) -> pd.DataFrame:
        head = self.head(name)
        frame = self._frame(X)[list(head["columns"])].copy()
        for column in head.get("categorical", ()):
            frame[column] = frame[column].astype(object).where(frame[column].notna(), "missing")
        return frame

    def _column(self, X: pd.DataFrame | np.ndarray, name: str) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            return X[name].to_numpy(dtype=float)
        return np.asarray(X, dtype=float)[:, self.feature_names.index(name)]

    def _raw(self, name: str, X: pd.DataFrame | np.ndarray, **kwargs: object) -> np.ndarray:
        head = self.head(name)
        if head.get("family") == "run_rate":
            values = np.clip(np.nan_to_num(self._column(X, head["column"]), nan=0.0), 0, None)
            return values * float(head["factor"])
        if name in self.estimators:
            return self.estimators[name].predict_proba(self._linear_inputs(name, X))[:, 1]
        if not kwargs and isinstance(X, np.ndarray) and X.shape == (1, len(self.feature_names)):
            return self._row_predictor(name).predict(X)
        threads = int(self.spec.get("num_threads", 2)) if len(X) >= 256 else 1
        return self.boosters[name].predict(X, num_threads=threads, **kwargs)

    def _row_predictor(self, name: str) -> RowPredictor:
        """The head's :class:`RowPredictor`, made on first use (races make two; one is kept)."""
        rows = self.__dict__.setdefault("_rows", {})
        predictor = rows.get(name)
        if predictor is None:
            predictor = rows.setdefault(name, RowPredictor(self.boosters[name]))
        return predictor

    def _linear_contributions(self, name: str, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Exact per-feature terms of a linear head's log-odds (bias last), like ``pred_contrib``."""
        head, pipeline = self.head(name), self.estimators[name]
        design = pipeline[:-1].transform(self._linear_inputs(name, X))
        design = design.toarray() if hasattr(design, "toarray") else np.asarray(design)
        model = pipeline[-1]
        terms = design * model.coef_[0]
        columns = [str(c).split("__", 1)[-1] for c in pipeline[:-1].get_feature_names_out()]
        owners = [_owner(column, head["columns"]) for column in columns]
        out = np.zeros((len(design), len(self.feature_names) + 1))
        position = {feature: j for j, feature in enumerate(self.feature_names)}
        for k, owner in enumerate(owners):
            out[:, position[owner]] += terms[:, k]
        out[:, -1] = float(model.intercept_[0])
        return out

    def _rate_contributions(self, name: str, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """A run-rate head's drivers: all of the log of its prediction over the prior comes from its
        one column (bias last: the log of the prior), in the log units of a Tweedie head's SHAP."""
        head = self.head(name)
        prior = max(float(head["prior"]), 1e-9)
        out = np.zeros((len(X), len(self.feature_names) + 1))
        predicted = np.maximum(self._raw(name, X), 1e-9)
        out[:, self.feature_names.index(head["column"])] = np.log(predicted / prior)
        out[:, -1] = np.log(prior)
        return out

    def probability(self, name: str, X: pd.DataFrame | np.ndarray, moment: object = None) -> np.ndarray:
        """Calibrated probability of a binary head on prepared inputs, for the window that starts at
        ``moment`` (default: now; it matters only for a head with a ``season`` form)."""
        head = self.head(name)
        probability = apply_calibrator(head.get("calibrator"), self._raw(name, X))
        if head.get("season") is None:
            return probability
        return seasonal(probability, str(head["season"]), self.seasonal_ratio(moment))

    def seasonal_ratio(self, moment: object = None) -> float:
        """``k`` of the window starting at ``moment`` (see :func:`seasonal_ratio`), kept for the last
        day asked: serving asks for today's on every request."""
        season = self.spec.get("season")
        if not season:
            return 1.0
        day = utc_day(moment)
        cached = self.__dict__.get("_seasonal")
        if cached is None or cached[0] != day:
            cached = (day, seasonal_ratio(season, day))
            self.__dict__["_seasonal"] = cached
        return cached[1]

    def predict(self, frame: pd.DataFrame, moment: object = None) -> pd.DataFrame:
        """The task's outputs for the window starting at ``moment`` (default: now), one row per input
        row (same index). Extra input columns are ignored."""
        return pd.DataFrame(self.outputs(self.prepare(frame), moment), index=frame.index)

    def outputs(self, X: pd.DataFrame | np.ndarray, moment: object = None) -> dict[str, np.ndarray]:
        """The task's outputs as columns, from :meth:`prepare` or :meth:`prepare_matrix` inputs, for
        the window starting at ``moment`` (default: now)."""
        heads = self.spec["heads"]
        unknown = {head["kind"] for head in heads} - {
            "binary",
            "quantile",
            "multiclass",
            "regression",
            "effect",
        }
        if unknown:
            raise ValueError(f"unknown head kinds {sorted(unknown)}")
        out: dict[str, np.ndarray] = {
            head["output"]: self.probability(head["name"], X, moment)
            for head in heads
            if head["kind"] == "binary"
        }
        for head in heads:
            if head["kind"] == "regression":
                raw = np.clip(self._raw(head["name"], X), 0, None)
                out[head["output"]] = raw * float(head.get("scale", 1.0))
            elif head["kind"] == "effect":
                out[head["output"]] = self._raw(head["name"], X)
        quantiles = sorted(
            (float(head["alpha"]), head["output"], head["name"])
            for head in heads
            if head["kind"] == "quantile"
        )
        if quantiles:
            raw = np.column_stack([self._raw(name, X) for _, _, name in quantiles])
            ordered = np.sort(np.clip(raw, 0, None), axis=1)
            out.update({output: ordered[:, index] for index, (_, output, _) in enumerate(quantiles)})
        for head in heads:
            if head["kind"] == "multiclass":
                out.update(self._ranked(head, self._raw(head["name"], X)))
        for shortfall in self.spec.get("shortfalls", ()):
            out[shortfall["output"]] = np.clip(out[shortfall["of"]] - out[shortfall["minus"]], 0, None)
        bands = self.spec.get("risk_bands")
        if bands:
            out[f"{self.task}_risk_band"] = risk_bands(np.asarray(out[heads[0]["output"]]), bands)
        return out

    @staticmethod
    def _ranked(head: Mapping[str, object], probabilities: np.ndarray) -> dict[str, np.ndarray]:
        classes = np.asarray(head["classes"], dtype=object)
        top = min(int(head["top"]), len(classes))
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top]
        ranked = np.take_along_axis(probabilities, order, axis=1)
        prefix = head["output"]
        out = {}
        for rank in range(top):
            out[f"{prefix}_{rank + 1}"] = classes[order[:, rank]]
            out[f"{prefix}_{rank + 1}_probability"] = ranked[:, rank]
        return out

    def drivers(self, frame: pd.DataFrame, k: int = 5, head: str | None = None) -> pd.DataFrame:
        """Per-row top-k drivers of a binary or quantile head (default: the first head), from tree
        SHAP contributions; ``row`` is the position in ``frame``."""
        X = self.prepare(frame)
        return top_contributions(self.contributions(X, head), X, self.feature_names, k)

    def contributions(self, X: pd.DataFrame | np.ndarray, head: str | None = None) -> np.ndarray:
        """Tree SHAP contributions of a binary or quantile head (default: the first), bias last."""
        name = head or self.spec["heads"][0]["name"]
        if self.head(name)["kind"] == "multiclass":
            raise ValueError("drivers are defined for binary, quantile and regression heads")
        if self.head(name).get("family") == "run_rate":
            return self._rate_contributions(name, X)
        if name in self.estimators:
            return self._linear_contributions(name, X)
        return self._raw(name, X, pred_contrib=True)

    def save(self, folder: Path | str) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, booster in self.boosters.items():
            booster.save_model(str(folder / f"{name}.txt"))
        for name, estimator in self.estimators.items():
            import joblib

            joblib.dump(estimator, folder / f"{name}.joblib")
        (folder / SPEC_FILE).write_text(json.dumps({**self.spec, "format": FORMAT_VERSION}, indent=1))
        return folder

    @classmethod
    def load(cls, folder: Path | str) -> ModelBundle:
        folder = Path(folder)
        spec = json.loads((folder / SPEC_FILE).read_text())
        if spec.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported model bundle format {spec.get('format')!r}")
        tree = [head["name"] for head in spec["heads"] if head.get("family", "lightgbm") == "lightgbm"]
        linear = [
            head["name"]
            for head in spec["heads"]
            if head["name"] not in tree and head.get("family") not in FORMULA_FAMILIES
        ]
        boosters = {name: lgb.Booster(model_file=str(folder / f"{name}.txt")) for name in tree}
        if linear:
            import joblib

            return cls(spec, boosters, {name: joblib.load(folder / f"{name}.joblib") for name in linear})
        return cls(spec, boosters)
