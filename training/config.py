"""Typed training configuration: what a run trains, on which cutoffs, with which LightGBM settings.

``as_of`` is the moment of training: no fact after it is read and every label window ends by it.
Everything else has a default that fits "100,000 customers x 6 cutoffs in 5 minutes on 2 cores".
"""

from __future__ import annotations

from datetime import datetime, timezone
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cxpredict import tasks as registry


class LightGBMParams(BaseModel):
    """LightGBM settings shared by every model; ``tune`` may override the tree-shape ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_leaves: int = Field(31, ge=2)
    learning_rate: float = Field(0.08, gt=0, le=1)
    min_data_in_leaf: int = Field(100, ge=1)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    bagging_freq: int = Field(1, ge=0)
    lambda_l2: float = Field(1.0, ge=0)
    max_bin: int = Field(127, ge=7)
    num_threads: int = Field(2, ge=1)
    num_boost_round: int = Field(400, ge=1)
    early_stopping_rounds: int = Field(30, ge=1)

    def booster_params(self) -> dict[str, object]:
        """Parameters for ``lightgbm.train`` (the round counts are passed separately)."""
        params = self.model_dump(exclude={"num_boost_round", "early_stopping_rounds"})
        params["verbosity"] = -1
        return params


class TrainConfig(BaseModel):
    """One training run. Cutoffs are derived from ``as_of`` and the task horizon (see ``cutoffs``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    as_of: datetime
    horizons: dict[str, int] = Field(
        default_factory=dict, description="label horizon H in days per task; absent: the task's default"
    )
    n_cutoffs: int = Field(6, ge=3, description="latest = evaluation, next = validation, rest = training")
    cutoff_step_months: int = Field(1, ge=1)
    align_cutoffs_to_month_start: bool = Field(
        True, description="floor the latest cutoff to the 1st of its month, where feature snapshots live"
    )
    tasks: tuple[str, ...] = Field(default_factory=registry.names)
    seed: int = 0
    lightgbm: LightGBMParams = LightGBMParams()
    tune_trials: int = Field(0, ge=0, description="Optuna trials on the validation cutoff; 0 = no tuning")
    recency_feature: str = "days_since_last_purchase"
    frequency_feature: str | None = Field(
        None, description="None = the purchase_count_<n>d feature with the longest window"
    )
    baseline_max_rows: int = Field(100_000, ge=1_000, description="logistic baselines fit on a sample")
    min_positives: int = Field(30, ge=1, description="a binary target needs this many positives per split")
    days_quantiles: tuple[float, float, float] = (0.1, 0.5, 0.9)
    top_categories: int = Field(3, ge=1)
    risk_bands: tuple[float, float] = Field((0.3, 0.6), description="low < a <= medium < b <= high")
    shap_sample: int = Field(2_000, ge=10, description="rows explained for the SHAP summary plot")
    register_models: bool = True

    @field_validator("as_of")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        low, mid, high = self.days_quantiles
        if not 0 < low < mid < high < 1:
            raise ValueError("days_quantiles must be increasing in (0, 1)")
        if not 0 < self.risk_bands[0] < self.risk_bands[1] < 1:
            raise ValueError("risk_bands must be increasing in (0, 1)")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError("tasks must not repeat")
        for task in {*self.tasks, *self.horizons}:
            registry.get(task)
        if any(not 1 <= days <= 730 for days in self.horizons.values()):
            raise ValueError("horizons must be within 1..730 days")
        return self

    def horizon(self, task: str) -> int:
        """Label horizon of ``task``: the configured one, else the task's default."""
        return int(self.horizons.get(task) or registry.get(task).horizon_days)
