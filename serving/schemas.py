"""Request and response shapes of the API; they are also its OpenAPI schema (``serving.openapi``
builds the document's components from these models). A block per registered task is built from the
task registry when the module is imported (BentoML reads the types when the service class is
defined).

Customer ids are pseudonymous keys: letters, digits and ``_ . : -`` only, so an email address or a
phone number sent by mistake is refused by the validator rather than looked up, logged or echoed.

Response models say exactly what the handlers send: a field that is always sent is required (null
where it may be null), so a generated client needs no guessing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StringConstraints, create_model
from pydantic.json_schema import SkipJsonSchema

from cxpredict import tasks as registry
from features.event_log import ENGAGEMENT_EVENTS, SERVICE_EVENTS, SURVEY_EVENTS
from serving.actions import CHANNELS
from features.decision_log import OUTCOMES
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

_NAMES = ConfigDict(protected_namespaces=())


def _no_default(schema: dict) -> None:
    """For a field that is sometimes absent but never null: no ``default: null`` in its schema."""
    schema.pop("default", None)


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))


# ---- predictions ------------------------------------------------------------------------------
class ModelRef(BaseModel):
    """The registered model version behind a block."""

    name: str = Field(description="Registered MLflow model name, e.g. cx-churn.")
    version: str
    alias: str = Field(description="The registry alias served (champion unless pinned).")


class ModelMissing(BaseModel):
    """A task this server has no model for: its blocks are null and ``/readyz`` says not ready."""

    error: str = Field(description="Why this task has no model (e.g. no champion).")


class CustomerPredictionBase(BaseModel):
    customer_id: str
    scored: bool = Field(description="False when no score may be given (see reason).")
    reason: str | None = Field(description="Why the customer is not scored (null when scored).")
    cold_start: bool = Field(description="True: unknown customer, answered from population priors.")
    features_as_of: datetime | None = Field(
        description="Snapshot time of the features used (stale features show here; null on a cold start)."
    )


def _block(spec: registry.TaskSpec) -> object:
    """The task's own ``Block`` type, named after the task (``ChurnBlock``) when it is a model."""
    block = implementation(spec).Block
    if isinstance(block, type) and issubclass(block, BaseModel):
        return create_model(f"{_camel(spec.name)}Block", __base__=block, __doc__=spec.summary)
    return block


BLOCKS: dict[str, object] = {spec.name: _block(spec) for spec in registry.all_tasks()}


def _model_refs(name: str, specs: tuple[registry.TaskSpec, ...]) -> type[BaseModel]:
    fields = {
        spec.name: (ModelRef | ModelMissing, Field(description=f"The model behind the {spec.name} block."))
        for spec in specs
    }
    return create_model(name, __config__=_NAMES, **fields)  # type: ignore[call-overload]


def _response(prefix: str, specs: tuple[registry.TaskSpec, ...], prediction: str) -> type[BaseModel]:
    """The answer of an endpoint serving ``specs``: exactly those blocks, each null when not scored."""
    blocks = {
        spec.name: (
            BLOCKS[spec.name] | None,
            Field(description=f"{spec.summary} Null: not scored (no consent, or no model for the task)."),
        )
        for spec in specs
    }
    customer = create_model(prediction, __base__=CustomerPredictionBase, **blocks)  # type: ignore[call-overload]
    refs = _model_refs(f"{prefix}ModelRefs" if len(specs) == 1 else "ModelRefs", specs)
    return create_model(  # type: ignore[call-overload]
        f"{prefix}Response",
        __config__=_NAMES,
        request_time=(datetime, ...),
        models=(refs, Field(description="The model name and version behind each block.")),
        predictions=(list[customer], Field(description="One per customer id, in the order sent.")),
    )


PredictResponse = _response("Predict", registry.all_tasks(), "CustomerPrediction")
"""The answer of ``/predict``: every registered task's block."""
TASK_RESPONSES: dict[str, type[BaseModel]] = {
    spec.name: _response(_camel(spec.name), (spec,), f"{_camel(spec.name)}Prediction")
    for spec in registry.all_tasks()
}
"""The answer of each task's own endpoint (``/churn``, ...): that block only."""
ModelRefs = PredictResponse.model_fields["models"].annotation


# ---- events and admin ---------------------------------------------------------------------------
class EventResponse(BaseModel):
    customer_id: str
    event_type: EventType
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
    model_config = _NAMES

    changed: bool = Field(description="True: some task now serves another model version.")
    models: ModelRefs = Field(description="What every task serves now.")  # type: ignore[valid-type]


class ReadinessResponse(BaseModel):
    model_config = _NAMES

    ready: bool
    reasons: list[str] = Field(description="What is missing (empty when ready).")
    models: ModelRefs | SkipJsonSchema[None] = Field(  # type: ignore[valid-type]
        default=None,
        description="What every task serves (absent while the service starts).",
        json_schema_extra=_no_default,
    )
    features_as_of: datetime | None = Field(
        default=None, description="Snapshot time of the online store (absent while the service starts)."
    )


# ---- errors -------------------------------------------------------------------------------------
class ErrorResponse(BaseModel):
    """Every error this API sends itself (400 for a rule of the endpoint, 401, 404, 413, 503)."""

    error: str = Field(description="What went wrong, for a person; never echoes a value sent.")
    field: str | None = Field(description="The request field (or header, or body) at fault, or null.")


class ValidationErrorItem(BaseModel):
    type: str = Field(description="pydantic's error type, e.g. missing, string_pattern_mismatch.")
    loc: list[str | int] = Field(description="Where in the body: field names and list indices.")
    msg: str
    url: str | SkipJsonSchema[None] = Field(
        default=None, description="Documentation of the error type.", json_schema_extra=_no_default
    )


class ValidationErrorResponse(BaseModel):
    """A payload that does not fit the request schema: one entry per field at fault, without its value."""

    error: str
    detail: list[ValidationErrorItem]


class ServerError(BaseModel):
    """An unexpected failure: the server log has the details."""

    error: str


class DecideContext(BaseModel):
    """Where the customer is now; a channel named here is preferred when the action allows it."""

    channel: Literal[CHANNELS] | None = None  # type: ignore[valid-type]
    moment: str | None = Field(default=None, max_length=64, description="e.g. session, checkout, call")


MaxActions = Annotated[int, Field(ge=1, le=5)]
DecisionId = Annotated[str, StringConstraints(min_length=3, max_length=64, pattern=r"^d-[0-9a-f]+$")]
ActionName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
Outcome = Literal[OUTCOMES]  # type: ignore[valid-type]
Revenue = Annotated[StrictFloat, Field(ge=0)]


class DecidedAction(BaseModel):
    action: str
    channel: Literal[CHANNELS]  # type: ignore[valid-type]
    send_within_hours: list[int] = Field(description="Contact within this many hours from the decision.")
    priority: float = Field(
        description="Expected value minus cost: expected uplift × what a success is worth − cost."
    )
    expected_uplift: float
    uplift_source: Literal["model", "prior"] = Field(
        description="model: the uplift model's estimate for this customer; prior: the catalogue's prior."
    )
    expected_value: float
    propensity: float = Field(description="Probability the policy had of choosing this action in its slot.")
    explored: bool = Field(description="True: chosen by the exploration share, at random among those left.")
    reasons: list[str]


class SuppressedAction(BaseModel):
    action: str
    rule: str = Field(description="The rule that suppressed it, e.g. no_marketing_consent, cooldown_30d.")


class CustomerDecision(BaseModel):
    customer_id: str
    decision_id: str | None = Field(description="Quote it in /outcomes; null when no decision is made.")
    scored: bool
    reason: str | None
    holdout: bool = Field(description="True: in the control group, so no action (still logged).")
    actions: list[DecidedAction]
    suppressed: list[SuppressedAction]


class DecideResponse(BaseModel):
    request_time: datetime
    models: ModelRefs  # type: ignore[valid-type]
    decisions: list[CustomerDecision]


class OutcomeResponse(BaseModel):
    decision_id: str
    action: str
    outcome: Outcome  # type: ignore[valid-type]
    accepted: bool
    duplicate: bool = Field(description="True: this outcome of this action was reported before.")
    offers: dict[str, float | None] | None = Field(
        None,
        description="The customer's offer features after this outcome, as pushed to the feature store's "
        "offer_outcomes view (null: the push failed; the outcome is logged and the next refresh writes them).",
    )
