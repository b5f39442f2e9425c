"""Request and response shapes of the API (DESIGN §5); they are also its OpenAPI schema.

Customer ids are pseudonymous keys: letters, digits and ``_ . : -`` only, so an email address or a
phone number sent by mistake is refused by the validator rather than looked up, logged or echoed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from features.store import ENGAGEMENT_EVENTS, SERVICE_EVENTS, SURVEY_EVENTS
from serving.settings import MAX_CUSTOMERS

CustomerId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")]
CustomerIds = Annotated[list[CustomerId], Field(min_length=1, max_length=MAX_CUSTOMERS)]
EventType = Literal[tuple(sorted(ENGAGEMENT_EVENTS | SERVICE_EVENTS | SURVEY_EVENTS))]  # type: ignore[valid-type]
SurveyKind = Literal["nps", "csat"]


class Driver(BaseModel):
    feature: str
    value: float | str | None = Field(description="The feature's value as served (None: missing).")
    impact: float = Field(description="Contribution to the score in log-odds (positive raises it).")


class ChurnBlock(BaseModel):
    probability: float
    risk_band: Literal["low", "medium", "high"]
    drivers: list[Driver]


class CategoryScore(BaseModel):
    category: str
    probability: float


class NextPurchaseBlock(BaseModel):
    probability: float = Field(description="Probability of a purchase within horizon_days.")
    horizon_days: int
    expected_days: float = Field(description="Median days to the next purchase.")
    interval_days: list[float] = Field(description="10th and 90th percentile of the days to the next purchase.")
    categories: list[CategoryScore]
    drivers: list[Driver]


class NeedScore(BaseModel):
    need: str
    probability: float


class CustomerPrediction(BaseModel):
    customer_id: str
    scored: bool = Field(description="False when no score may be given (see reason).")
    reason: str | None = None
    cold_start: bool = Field(description="True: unknown customer, answered from population priors.")
    features_as_of: datetime | None = Field(description="Snapshot time of the features used (stale features show here).")
    churn: ChurnBlock | None = None
    next_purchase: NextPurchaseBlock | None = None
    unmet_needs: list[NeedScore] | None = None


class ModelRef(BaseModel):
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    error: str | None = Field(default=None, description="Why this block has no model (e.g. no champion).")


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    request_time: datetime
    models: dict[str, ModelRef] = Field(description="The model name and version behind each block.")
    predictions: list[CustomerPrediction]


class EventResponse(BaseModel):
    customer_id: str
    event_type: str
    accepted: bool
    realtime: dict[str, float | None] = Field(
        description="The customer's counters since the last snapshot, after this event."
    )


class ReloadResponse(BaseModel):
    changed: bool
    models: dict[str, ModelRef]
