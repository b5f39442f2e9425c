"""Request and response shapes of the API; they are also its OpenAPI schema. A block per
registered task is built from the task registry when the module is imported (BentoML reads the
types when the service class is defined).

Customer ids are pseudonymous keys: letters, digits and ``_ . : -`` only, so an email address or a
phone number sent by mistake is refused by the validator rather than looked up, logged or echoed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StringConstraints, create_model

from cxpredict import tasks as registry

from features.event_log import ENGAGEMENT_EVENTS, SERVICE_EVENTS, SURVEY_EVENTS
from serving.settings import MAX_CUSTOMERS
from training.tasks import implementation

CustomerId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
]
CustomerIds = Annotated[list[CustomerId], Field(min_length=1, max_length=MAX_CUSTOMERS)]
EventType = Literal[tuple(sorted(ENGAGEMENT_EVENTS | SERVICE_EVENTS | SURVEY_EVENTS))]  # type: ignore[valid-type]
SurveyKind = Literal["nps", "csat"]
EventId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
]
"""The client's idempotency key for an event: a retry with the same id is counted once."""
SurveyScore = StrictFloat
"""A number (never a boolean or a string); a whole number on the survey's scale."""


class CustomerPredictionBase(BaseModel):
    customer_id: str
    scored: bool = Field(description="False when no score may be given (see reason).")
    reason: str | None = None
    cold_start: bool = Field(description="True: unknown customer, answered from population priors.")
    features_as_of: datetime | None = Field(
        description="Snapshot time of the features used (stale features show here)."
    )


def _prediction_model() -> type[BaseModel]:
    """One optional block per registered task, typed by the task's own ``Block``."""
    blocks = {
        spec.name: (implementation(spec).Block | None, Field(default=None, description=spec.summary))
        for spec in registry.all_tasks()
    }
    return create_model("CustomerPrediction", __base__=CustomerPredictionBase, **blocks)


CustomerPrediction = _prediction_model()


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
    accepted: bool = Field(description="True: the event is in the durable log (it survives a crash).")
    event_id: str = Field(description="The idempotency key: the one sent, or a digest of the event.")
    duplicate: bool = Field(description="True: this key was logged before; the event is counted once.")
    known_customer: bool = Field(
        description="False: the snapshot does not know this customer; the event is logged (and folded "
        "into a later snapshot if the customer appears) but adds nothing to the online store."
    )
    realtime: dict[str, float | None] = Field(
        description="The customer's counters since the last snapshot, after this event."
    )


class ReloadResponse(BaseModel):
    changed: bool
    models: dict[str, ModelRef]
