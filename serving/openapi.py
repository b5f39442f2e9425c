"""The API's OpenAPI document: BentoML's, completed.

Why: BentoML 1.4 builds ``/docs.json`` from the handler signatures only. It names every request body
``Input`` and every response ``...IODescriptor``, documents a 400 body the service never sends,
knows nothing of the gateway (API keys, body limit: 401, 413) nor of the 503 a broken online store
gives, and fills ``info`` with its own text. The gateway (``serving.gateway``) serves
:func:`complete_openapi` of BentoML's document instead; it is a pure function, so the tests check it
without a server.

Contract of the completed document (OpenAPI 3.1; the schemas are pydantic's JSON Schema):

- request bodies keep BentoML's schemas (they are the handler signatures, hence what is validated),
  named ``PredictRequest`` / ``EventRequest`` / ``ReloadRequest``; responses are the models of
  ``serving.schemas`` (``PredictResponse``, ``ChurnResponse``, ..., ``EventResponse``,
  ``ReloadResponse``), with one fixed key per registered task under ``models``;
- risk bands, event types and survey kinds are named enums (``RiskBand``, ``EventType``, ``SurveyKind``);
- every operation the gateway guards has ``security: [{bearerAuth: []}]`` (an HTTP bearer scheme),
  the open ones ``security: []``; every API operation documents 400, 401, 404, 413, 500 and 503
  with the exact bodies sent (``ErrorResponse``, ``ValidationErrorResponse``, ``ServerError``).

A route the table below does not know makes :func:`complete_openapi` raise: a new endpoint has to
say what it answers before the document can be served.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import cxpredict
from cxpredict import tasks as registry
from serving import schemas
from serving.gateway import OPEN_PATHS, OPEN_PREFIXES, READY_PATH

REF = "#/components/schemas/{model}"
BEARER = "bearerAuth"
TITLE = "CX Predict"
DESCRIPTION = """\
Churn risk, next purchase and unmet needs per customer, with the reasons behind each score, for
journey orchestration and next-best-action systems; and an event endpoint that feeds fresh
behaviour into the next prediction.

**Authentication.** Every endpoint except health, metrics and these docs needs
`Authorization: Bearer <API key>`. Keys come from `CXPREDICT_API_KEYS` or `CXPREDICT_API_KEYS_FILE`;
`cxpredict serve` creates one in `.cxpredict/serving/api_keys` when neither is set. Use
**Authorize** to try the calls from this page.

**Customers.** Ids are pseudonymous keys (letters, digits and `_ . : -`): an email address or a
phone number is refused with a 400 and never echoed or logged. An unknown customer gets a
`cold_start: true` answer from the training population's priors; a customer who refused profiling
gets `scored: false`, a `reason` and null blocks.

**Errors** are JSON. The service's own are `{"error", "field"}` (`field`: the request field,
header or body at fault, or null); a payload that does not fit the request schema gets 400
`{"error", "detail": [{"type", "loc", "msg"}]}`, one entry per field at fault, without its value.
"""

ENUMS = {
    "risk_band": ("RiskBand", "The churn probability's band against the model's thresholds."),
    "event_type": (
        "EventType",
        "What happened: engagement (session, page view, search, product view, cart, wishlist, "
        "checkout), service (ticket opened or resolved) or a survey answer.",
    ),
    "kind": ("SurveyKind", "The survey's scale: nps (0 to 10) or csat (1 to 5)."),
}
"""Properties whose inline enum becomes a named component (a generated client gets an enum type)."""

TAGS = [
    {"name": "Predictions", "description": "Scores with reasons, for 1 to 1,000 customers per call."},
    {"name": "Events", "description": "Fresh behaviour, seen by the next prediction."},
    {"name": "Decisions", "description": "Next best actions with a holdout, and their outcomes."},
    {"name": "Administration", "description": "Model operations."},
    {"name": "Infrastructure", "description": "Health, readiness and Prometheus metrics; no key needed."},
]


@dataclass(frozen=True)
class Route:
    """What one API operation takes and answers, beyond what BentoML read from its signature."""

    summary: str
    tag: str
    request: str
    """Component name of the request body (BentoML's schema, renamed)."""
    response: type[BaseModel]
    example: dict | None = None
    body_required: bool = True
    errors: tuple[tuple[str, str], ...] = ()
    """Statuses only this operation answers, with their description (``ErrorResponse`` bodies)."""


def routes() -> dict[str, Route]:
    """BentoML method name (``x-bentoml-name``) -> its route."""
    predict = {"customer_ids": ["C0003791", "C0000042"]}
    table = {
        "predict": Route(
            "Every block for 1 to 1,000 customers",
            "Predictions",
            "PredictRequest",
            schemas.PredictResponse,
            predict,
        ),
        "events": Route(
            "Push one event",
            "Events",
            "EventRequest",
            schemas.EventResponse,
            {"customer_id": "C0003791", "event_type": "survey_answered", "kind": "nps", "score": 9},
            errors=(("410", "The customer was erased on request (`field`: customer_id): nothing is kept."),),
        ),
        "decide": Route(
            "Next best actions for 1 to 1,000 customers",
            "Decisions",
            "DecideRequest",
            schemas.DecideResponse,
            {
                "customer_ids": ["C0003791"],
                "context": {"channel": "web", "moment": "session"},
                "max_actions": 2,
            },
        ),
        "outcomes": Route(
            "Report the outcome of a decided action",
            "Decisions",
            "OutcomeRequest",
            schemas.OutcomeResponse,
            {"decision_id": "d-5f2b9c", "action": "retention_offer", "outcome": "opened"},
        ),
        "reload": Route(
            "Reload the models now", "Administration", "ReloadRequest", schemas.ReloadResponse, {}, False
        ),
    }
    for spec in registry.all_tasks():
        table[spec.name] = Route(
            spec.summary.rstrip("."),
            "Predictions",
            "PredictRequest",
            schemas.TASK_RESPONSES[spec.name],
            predict,
        )
    return table


def _error(description: str, schema: str, headers: dict | None = None) -> dict:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=schema)}}},
    }
    if headers:
        answer["headers"] = headers
    return answer


ERROR_RESPONSES: dict[str, dict] = {
    "400": {
        "description": "The payload does not fit the request schema (`detail[].loc` names each field at "
        "fault) or breaks a rule of the endpoint (`field` names it).",
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"$ref": REF.format(model="ValidationErrorResponse")},
                        {"$ref": REF.format(model="ErrorResponse")},
                    ]
                }
            }
        },
    },
    "401": _error(
        "No valid API key: `Authorization: Bearer <key>` is missing or wrong (`field`: Authorization).",
        "ErrorResponse",
        {"WWW-Authenticate": {"description": 'Bearer realm="cxpredict"', "schema": {"type": "string"}}},
    ),
    "404": _error(
        "No such endpoint on this server, e.g. the endpoint of a task this deployment does not serve.",
        "ErrorResponse",
    ),
    "413": _error(
        "The body is larger than `CXPREDICT_MAX_BODY_BYTES` (256 KiB by default; `field`: body).",
        "ErrorResponse",
    ),
    "500": _error("An unexpected failure; the server log has the details.", "ServerError"),
    "503": _error(
        "The online feature store is unreachable or was not opened (`error` says what failed); retry later.",
        "ErrorResponse",
    ),
}
"""Statuses every API operation may answer besides 200: the gateway's (401, 413, 400 for a bad
Content-Length, 404), BentoML's (400 validation, 500) and the handlers' (400 rules, 503)."""

ERROR_MODELS = (schemas.ErrorResponse, schemas.ValidationErrorResponse, schemas.ServerError)


def protected(path: str) -> bool:
    """True when the gateway asks this path for an API key."""
    return not (path in OPEN_PATHS or path == READY_PATH or path.startswith(OPEN_PREFIXES))


def complete_openapi(doc: dict, inputs: Mapping[str, type[BaseModel]] | None = None) -> dict:
    """BentoML's document ``doc`` (``Service.openapi_spec.asdict()``), completed as the module says.

    ``inputs`` maps BentoML method names to the input models BentoML validates requests with
    (``Service.apis[name].input_spec``): their schemas replace the document's request bodies, which
    BentoML flattens (an optional field there loses its ``null``). Raises ``ValueError`` when
    ``doc`` has an API operation :func:`routes` does not describe, or when two operations that share
    a request component disagree on its schema."""
    source = copy.deepcopy(doc)
    table = routes()
    models = [route.response for route in table.values()]
    models += [*ERROR_MODELS, schemas.ReadinessResponse]
    _, generated = models_json_schema([(model, "serialization") for model in models], ref_template=REF)
    components: dict[str, Any] = dict(generated.get("$defs", {}))
    paths: dict[str, Any] = {}
    for path, item in source.get("paths", {}).items():
        paths[path] = {}
        for method, operation in item.items():
            name = operation.get("x-bentoml-name")
            if name is None:
                operation = _infra(path, operation)
            else:
                if name not in table:
                    raise ValueError(
                        f"{method.upper()} {path} ({name}) is not described in serving.openapi.routes"
                    )
                request = (
                    inputs[name].model_json_schema(ref_template=REF) if inputs and name in inputs else None
                )
                operation = _api(name, operation, table[name], components, request)
            operation["security"] = [{BEARER: []}] if protected(path) else []
            paths[path][method] = operation
    components = _hoist_enums(components)
    document = {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": cxpredict.__version__, "description": DESCRIPTION},
        "servers": source.get("servers", [{"url": "."}]),
        "tags": TAGS,
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key of this server (`CXPREDICT_API_KEYS` or `CXPREDICT_API_KEYS_FILE`).",
                }
            },
        },
    }
    return _prune(document)


def _api(name: str, operation: dict, route: Route, components: dict[str, Any], request: dict | None) -> dict:
    if request is None:
        content = operation.get("requestBody", {}).get("content", {})
        request = copy.deepcopy(content.get("application/json", {}).get("schema", {"type": "object"}))
    for def_name, schema in request.pop("$defs", {}).items():
        if components.setdefault(def_name, schema) != schema:
            raise ValueError(f"{name}: its request defines another {def_name}")
    request["title"] = route.request
    if route.request in components and components[route.request] != request:
        raise ValueError(f"{name}: its request body differs from the other {route.request} operations")
    components[route.request] = request
    media: dict[str, Any] = {"schema": {"$ref": REF.format(model=route.request)}}
    if route.example is not None:
        media["example"] = route.example
    return {
        "operationId": name,
        "summary": route.summary,
        "description": inspect.cleandoc(operation.get("description") or ""),
        "tags": [route.tag],
        "x-bentoml-name": name,
        "requestBody": {"required": route.body_required, "content": {"application/json": media}},
        "responses": {
            "200": {
                "description": "The answer.",
                "content": {
                    "application/json": {"schema": {"$ref": REF.format(model=route.response.__name__)}}
                },
            },
            **copy.deepcopy(ERROR_RESPONSES),
            **{status: _error(description, "ErrorResponse") for status, description in route.errors},
        },
    }


def _infra(path: str, operation: dict) -> dict:
    """BentoML's health and metrics operations, with what ``/readyz`` (the gateway's) answers."""
    operation = {**operation, "tags": ["Infrastructure"]}
    if path == READY_PATH:
        readiness = {"application/json": {"schema": {"$ref": REF.format(model="ReadinessResponse")}}}
        operation["description"] = (
            "Readiness, with the reasons when not ready (no champion for a task, online store unreachable)."
        )
        operation["responses"] = {
            "200": {"description": "Ready to serve.", "content": readiness},
            "503": {"description": "Not ready; `reasons` says why.", "content": readiness},
        }
    elif path == "/metrics":
        operation["responses"] = {
            "200": {
                "description": "Prometheus text format.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        }
    return operation


def _walk(node: Any) -> Iterator[dict]:
    """Every mapping inside ``node``, ``node`` included."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _hoist_enums(components: dict[str, Any]) -> dict[str, Any]:
    """Inline enums of the :data:`ENUMS` properties, replaced by references to named components."""
    named: dict[str, dict] = {}
    for node in list(_walk(components)):
        for prop, schema in (node.get("properties") or {}).items():
            if prop not in ENUMS or not isinstance(schema, dict):
                continue
            name, description = ENUMS[prop]
            for holder in [schema, *schema.get("anyOf", [])]:
                if "enum" not in holder:
                    continue
                enum = {
                    "type": holder.pop("type", "string"),
                    "enum": holder.pop("enum"),
                    "title": name,
                    "description": description,
                }
                if named.setdefault(name, enum) != enum:
                    raise ValueError(f"{prop}: two different enums would be named {name}")
                holder["$ref"] = REF.format(model=name)
    return {**components, **named}


def _prune(document: dict) -> dict:
    """``document`` without the component schemas nothing refers to (BentoML's own, replaced)."""
    schemas_ = document["components"]["schemas"]
    prefix = REF.format(model="")
    kept: set[str] = set()
    pending = [document["paths"]]
    while pending:
        for node in _walk(pending.pop()):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(prefix) and ref[len(prefix) :] not in kept:
                kept.add(ref[len(prefix) :])
                pending.append(schemas_[ref[len(prefix) :]])
    document["components"]["schemas"] = {name: schemas_[name] for name in sorted(kept)}
    return document
