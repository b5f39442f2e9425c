"""The API docs and the OpenAPI document: Swagger UI at ``/docs``, and a document that says what the
server really does (auth, errors, named schemas, enums), checked against real answers three ways:
JSON Schema (strict: no undocumented field), schemathesis' response conformance, and a client
built from the document's schemas (strict pydantic models) that must parse them."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Union, get_args
from urllib.parse import urljoin

import jsonschema
import pydantic
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from cxpredict import tasks as registry
from serving.gateway import GatewayMiddleware, Readiness
from serving.settings import MAX_BODY_BYTES, ServeSettings

API_OPERATIONS = {
    "/predict": "PredictResponse",
    **{
        f"/{spec.cli_name}": f"{''.join(p.title() for p in spec.name.split('_'))}Response"
        for spec in registry.all_tasks()
    },
    "/events": "EventResponse",
    "/decide": "DecideResponse",
    "/outcomes": "OutcomeResponse",
    "/admin/reload": "ReloadResponse",
}
"""Every API route and the response component its 200 must name."""
REQUESTS = {
    "/events": "EventRequest",
    "/decide": "DecideRequest",
    "/outcomes": "OutcomeRequest",
    "/admin/reload": "ReloadRequest",
}
"""The request component of the routes that do not take ``PredictRequest``."""
OPEN_OPERATIONS = {"/livez", "/healthz", "/readyz", "/metrics"}
ERRORS = {"400", "401", "404", "413", "500", "503"}
SCHEMAS = "#/components/schemas/"


# ---- reading the document ---------------------------------------------------------------------
def _operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def _answer_schema(document: dict, path: str, method: str, status: int) -> dict:
    responses = document["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} does not document {status}"
    return responses[str(status)]["content"]["application/json"]["schema"]


def _strict(document: dict) -> dict:
    """The document with every object closed (``additionalProperties: false`` where it says
    nothing): the document stays open to new fields, the tests hold the answers to it exactly."""
    closed = copy.deepcopy(document)
    pending: list[Any] = [closed["components"]["schemas"]]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return closed


_DATE_TIME = jsonschema.FormatChecker(formats=())


@_DATE_TIME.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    return (
        not isinstance(value, str) or datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None
    )


def _errors(document: dict, schema: dict, instance: object) -> list[str]:
    """Where ``instance`` breaks ``schema`` (whose ``$ref`` point into ``document``)."""
    anchored = json.loads(json.dumps(schema).replace('"#/components/', '"urn:cxpredict#/components/'))
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    validator = jsonschema.Draft202012Validator(
        anchored,
        registry=Registry().with_resource("urn:cxpredict", resource),
        format_checker=_DATE_TIME,
    )
    return [
        f"{list(error.absolute_path)}: {error.message[:300]}" for error in validator.iter_errors(instance)
    ]


# ---- a client generated from the document --------------------------------------------------------
class StrictClient:
    """Pydantic models built from the document's component schemas, as a code generator would
    (one model per object schema, enums as literals, nullable as ``| None``), but strict: an
    undocumented field, a missing required one or a wrong type fails the parse. Any schema construct
    it does not know is an error too, so a document it cannot read fails the test."""

    CONFIG = pydantic.ConfigDict(extra="forbid", strict=True, protected_namespaces=())

    def __init__(self, document: dict) -> None:
        self.schemas = document["components"]["schemas"]
        self.types: dict[str, Any] = {}

    def named(self, name: str) -> Any:
        if name not in self.types:
            self.types[name] = self.annotation(self.schemas[name], name)
        return self.types[name]

    def annotation(self, node: dict, hint: str) -> Any:
        if "$ref" in node:
            assert node["$ref"].startswith(SCHEMAS), node
            return self.named(node["$ref"][len(SCHEMAS) :])
        for union in ("anyOf", "oneOf"):
            if union in node:
                members = tuple(self.annotation(member, f"{hint}{i}") for i, member in enumerate(node[union]))
                return Union[members]
        if "enum" in node:
            return Literal[tuple(node["enum"])]
        kind = node.get("type")
        if kind == "null":
            return type(None)
        if kind == "string":
            return datetime if node.get("format") == "date-time" else str
        if kind in ("number", "integer", "boolean"):
            return {"number": float, "integer": int, "boolean": bool}[kind]
        if kind == "array":
            return list[self.annotation(node["items"], f"{hint}Item")]
        if kind == "object" and "properties" in node:
            required = set(node.get("required", ()))
            fields = {
                name: (self.annotation(schema, f"{hint}_{name}"), ... if name in required else None)
                for name, schema in node["properties"].items()
            }
            return pydantic.create_model(hint, __config__=self.CONFIG, **fields)
        if kind == "object" and isinstance(node.get("additionalProperties"), dict):
            return dict[str, self.annotation(node["additionalProperties"], f"{hint}Value")]
        raise AssertionError(f"the generated client cannot read {hint}: {node}")

    def parse(self, schema: dict, text: str) -> Any:
        return pydantic.TypeAdapter(self.annotation(schema, "Answer")).validate_json(text)


# ---- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def document(api) -> dict:
    with api.client(key=None) as client:
        answer = client.get("/docs.json")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    return answer.json()


@pytest.fixture(scope="module")
def refused(served_workspace) -> list[str]:
    from training.data import withheld_consent

    return sorted(withheld_consent(served_workspace, datetime(2026, 11, 1, tzinfo=UTC)))[:2]


@pytest.fixture(scope="module")
def answers(api, known_ids, refused) -> list[tuple[str, str, int, Any]]:
    """(case, documented path, expected status, answer): a real answer of every route and error."""
    ids = {"customer_ids": [*known_ids[:3], "NEVER-SEEN-OPENAPI", *refused]}
    stranger = f"OPENAPI-{uuid.uuid4().hex[:12]}"
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    collected = []
    with api.client() as client:
        for path in API_OPERATIONS:
            if path.startswith("/admin") or path in ("/events", "/outcomes"):
                continue
            collected.append((f"{path} 200", path, 200, client.post(path, json=ids)))
        decided = client.post("/decide", json={"customer_ids": known_ids[:200], "max_actions": 2}).json()
        chosen = next(d for d in decided["decisions"] if d["actions"])
        held = next(d for d in decided["decisions"] if d["decision_id"] and not d["actions"])
        collected.append(
            (
                "decide many 200",
                "/decide",
                200,
                client.post("/decide", json={"customer_ids": known_ids[:200]}),
            )
        )
        outcome = {
            "decision_id": chosen["decision_id"],
            "action": chosen["actions"][0]["action"],
            "outcome": "opened",
        }
        calls = [
            ("event 200", "/events", 200, {"json": {"customer_id": stranger, "event_type": "page_view"}}),
            (
                "survey event 200",
                "/events",
                200,
                {
                    "json": {
                        "customer_id": stranger,
                        "event_type": "survey_answered",
                        "kind": "nps",
                        "score": 9,
                        "event_id": f"e-{stranger}",
                    }
                },
            ),
            ("reload 200", "/admin/reload", 200, {"json": {}}),
            ("outcome 200", "/outcomes", 200, {"json": outcome}),
            ("outcome again 200", "/outcomes", 200, {"json": outcome}),
            (
                "outcome unknown decision 404",
                "/outcomes",
                404,
                {"json": {**outcome, "decision_id": "d-0000"}},
            ),
            (
                "outcome action not decided 400",
                "/outcomes",
                400,
                {"json": {**outcome, "decision_id": held["decision_id"]}},
            ),
            ("bad id 400", "/predict", 400, {"json": {"customer_ids": ["jane.doe@example.com"]}}),
            ("task bad id 400", "/churn", 400, {"json": {"customer_ids": []}}),
            ("malformed json 400", "/predict", 400, {"content": b'{"customer_ids": [', "headers": _JSON}),
            ("event missing type 400", "/events", 400, {"json": {"customer_id": stranger}}),
            (
                "event rule 400",
                "/events",
                400,
                {"json": {"customer_id": stranger, "event_type": "search", "timestamp": future}},
            ),
            ("big body 413", "/predict", 413, {"content": b" " * (MAX_BODY_BYTES + 1), "headers": _JSON}),
        ]
        for case, path, status, request in calls:
            collected.append((case, path, status, client.post(path, **request)))
        collected.append(("no such endpoint 404", "/predict", 404, client.post("/no-such-endpoint", json={})))
    with api.client(key=None) as anonymous:
        for path in API_OPERATIONS:
            collected.append((f"{path} no key 401", path, 401, anonymous.post(path, json=ids)))
        collected.append(("ready 200", "/readyz", 200, anonymous.get("/readyz")))
    return collected


_JSON = {"content-type": "application/json"}


# ---- docs pages -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_docs_is_a_swagger_ui_over_the_document_and_the_index_still_works(api, document):
    with api.client(key=None) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        (url,) = re.findall(r'url: "([^"]+)"', page.text)
        assert urljoin(f"{api.url}/docs", url) == f"{api.url}/docs.json"
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets)
        for asset in assets:
            assert client.get(urljoin(f"{api.url}/docs", asset)).status_code == 200, asset
        assert client.get("/").status_code == 200
        assert client.get("/docs.json").json() == document


@pytest.mark.slow
def test_the_document_describes_the_product(document):
    import cxpredict

    assert document["openapi"].startswith("3.1")
    info = document["info"]
    assert info["title"] == "CX Predict" and info["version"] == cxpredict.__version__
    assert "BentoML" not in info["description"] and "Bearer" in info["description"]


@pytest.mark.slow
def test_protected_operations_declare_the_bearer_scheme_and_the_gateway_agrees(api, document):
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    protected = {path for path, _, operation in _operations(document) if operation["security"]}
    assert protected == set(API_OPERATIONS)
    assert {
        path for path, _, operation in _operations(document) if operation["security"] == []
    } == OPEN_OPERATIONS
    for _, _, operation in _operations(document):
        assert operation["security"] in ([], [{"bearerAuth": []}])
    with api.client(key=None) as client:
        for path, method, operation in _operations(document):
            answer = client.request(method, path, json={} if method == "post" else None)
            assert (answer.status_code == 401) == bool(operation["security"]), (path, answer.status_code)


@pytest.mark.slow
def test_every_api_operation_documents_its_errors_and_named_schemas(document):
    schemas = document["components"]["schemas"]
    assert not [name for name in schemas if "Input" in name or "IODescriptor" in name or "__" in name]
    for path, response in API_OPERATIONS.items():
        operation = document["paths"][path]["post"]
        assert ERRORS <= set(operation["responses"]), path
        assert _answer_schema(document, path, "post", 200) == {"$ref": SCHEMAS + response}
        request = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert request == SCHEMAS + REQUESTS.get(path, "PredictRequest")
        assert _answer_schema(document, path, "post", 400) == {
            "anyOf": [{"$ref": SCHEMAS + "ValidationErrorResponse"}, {"$ref": SCHEMAS + "ErrorResponse"}]
        }
        for status in (401, 404, 413, 503):
            assert _answer_schema(document, path, "post", status) == {"$ref": SCHEMAS + "ErrorResponse"}
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    assert schemas["ErrorResponse"]["required"] == ["error", "field"]
    assert set(schemas["ValidationErrorResponse"]["required"]) == {"error", "detail"}


@pytest.mark.slow
def test_enums_and_model_keys_come_from_the_code(document):
    from serving.schemas import EventType, SurveyKind
    from training.tasks import churn

    schemas = document["components"]["schemas"]
    assert schemas["RiskBand"]["enum"] == list(get_args(churn.Block.model_fields["risk_band"].annotation))
    assert schemas["EventType"]["enum"] == list(get_args(EventType))
    assert schemas["SurveyKind"]["enum"] == list(get_args(SurveyKind))
    assert schemas["ChurnBlock"]["properties"]["risk_band"]["$ref"] == SCHEMAS + "RiskBand"
    assert schemas["EventRequest"]["properties"]["event_type"]["$ref"] == SCHEMAS + "EventType"
    assert schemas["EventRequest"]["properties"]["kind"]["anyOf"][0]["$ref"] == SCHEMAS + "SurveyKind"
    assert schemas["EventResponse"]["properties"]["event_type"]["$ref"] == SCHEMAS + "EventType"
    names = [spec.name for spec in registry.all_tasks()]
    assert list(schemas["ModelRefs"]["properties"]) == names and schemas["ModelRefs"]["required"] == names
    assert schemas["ReloadResponse"]["properties"]["models"]["$ref"] == SCHEMAS + "ModelRefs"
    assert schemas["ChurnModelRefs"]["required"] == ["churn"]


# ---- real answers against the document ---------------------------------------------------------------
@pytest.mark.slow
def test_real_answers_of_every_route_conform_to_the_document(api, document, answers):
    import schemathesis

    strict = _strict(document)
    loose = schemathesis.openapi.from_dict(document)
    failures = []
    for case, path, status, answer in answers:
        assert answer.status_code == status, (case, answer.text[:300])
        assert answer.headers["content-type"].startswith("application/json"), case
        method = "get" if path == "/readyz" else "post"
        schema = _answer_schema(strict, path, method, status)
        failures += [f"{case}: {error}" for error in _errors(strict, schema, answer.json())]
        loose[path][method.upper()].validate_response(answer)
    assert not failures, failures[:10]
    # and the answers cover both 400 shapes and the blocks' null and non-null states
    bodies = {case: answer.json() for case, _, _, answer in answers}
    assert "detail" in bodies["bad id 400"] and bodies["event rule 400"]["field"] == "timestamp"
    predictions = bodies["/predict 200"]["predictions"]
    assert {p["cold_start"] for p in predictions} == {True, False}
    assert {p["scored"] for p in predictions} == {True, False}


@pytest.mark.slow
def test_a_client_generated_from_the_document_parses_real_answers(document, answers):
    client = StrictClient(document)
    for case, path, status, answer in answers:
        method = "get" if path == "/readyz" else "post"
        client.parse(_answer_schema(document, path, method, status), answer.text)
    # and it is strict: an undocumented field, an unknown enum value or a missing field fails
    body = next(answer.json() for case, _, _, answer in answers if case == "/predict 200")
    schema = _answer_schema(document, "/predict", "post", 200)
    broken = [
        {**body, "extra": 1},
        {
            **body,
            "predictions": [
                {
                    **body["predictions"][0],
                    "churn": {**body["predictions"][0]["churn"], "risk_band": "extreme"},
                }
            ],
        },
        {key: value for key, value in body.items() if key != "models"},
    ]
    for wrong in broken:
        with pytest.raises(pydantic.ValidationError):
            client.parse(schema, json.dumps(wrong))


# ---- without a server ---------------------------------------------------------------------------------
def test_the_document_is_valid_openapi_3_1_without_a_server():
    import schemathesis

    from serving.service import openapi_document

    document = openapi_document()
    schemathesis.openapi.from_dict(document).validate()  # the OpenAPI 3.1 meta-schema
    client = StrictClient(document)
    for name in document["components"]["schemas"]:  # every component is one the client can read
        client.named(name)


def test_an_api_route_the_document_does_not_describe_is_refused():
    from serving.openapi import complete_openapi

    doc = {"paths": {"/new": {"post": {"x-bentoml-name": "new_task", "responses": {}}}}}
    with pytest.raises(ValueError, match="new_task"):
        complete_openapi(doc)


def _run(gateway, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [(b"authorization", b"Bearer k")]}
    asyncio.run(gateway(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], dict(sent[0]["headers"]), body


def test_the_gateway_serves_the_docs_builds_the_document_once_and_answers_json_404s():
    calls = []

    async def starlette_404(scope, receive, send):
        await send(
            {
                "type": "http.response.start",
                "status": 404,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"9")],
            }
        )
        await send({"type": "http.response.body", "body": b"Not Found"})

    def build() -> dict:
        calls.append(1)
        return {"openapi": "3.1.0"}

    gateway = GatewayMiddleware(starlette_404, Readiness(), ServeSettings(api_keys="k"), openapi=build)
    status, headers, body = _run(gateway, "/docs")
    assert status == 200 and headers[b"content-type"].startswith(b"text/html") and b"./docs.json" in body
    for _ in range(2):
        assert _run(gateway, "/docs.json")[::2] == (200, b'{"openapi":"3.1.0"}')
    assert len(calls) == 1
    status, headers, body = _run(gateway, "/nowhere", "POST")
    assert status == 404 and headers[b"content-type"] == b"application/json"
    assert json.loads(body) == {"error": "this server has no such endpoint", "field": None}


def test_given_the_document_when_a_client_is_generated_from_it_then_it_parses_real_200_and_400_answers(
    api, known_ids, tmp_path
):
    import importlib.util
    import sys

    from datamodel_code_generator import DataModelType, InputFileType, generate

    # given pydantic models generated from the served document by datamodel-code-generator
    with api.client() as client:
        document = client.get("/docs.json").text
        predicted = client.post("/predict", json={"customer_ids": known_ids[:3]})
        decided = client.post("/decide", json={"customer_ids": known_ids[:20]})
        refused = client.post("/predict", json={"customer_ids": ["jane.doe@example.com"]})
        unknown = client.post(
            "/outcomes", json={"decision_id": "d-0000", "action": "win_back", "outcome": "opened"}
        )
    target = tmp_path / "client_models.py"
    generate(
        document,
        input_file_type=InputFileType.OpenAPI,
        output=target,
        output_model_type=DataModelType.PydanticV2BaseModel,
    )
    spec = importlib.util.spec_from_file_location("client_models", target)
    models = importlib.util.module_from_spec(spec)
    sys.modules["client_models"] = models  # pydantic resolves the generated forward references here
    try:
        spec.loader.exec_module(models)
        for name in ("PredictResponse", "DecideResponse", "ValidationErrorResponse", "ErrorResponse"):
            getattr(models, name).model_rebuild()
    finally:
        del sys.modules["client_models"]

    # when the real answers are parsed, then they fit the generated types
    assert (predicted.status_code, decided.status_code, refused.status_code, unknown.status_code) == (
        200,
        200,
        400,
        404,
    )
    parsed = models.PredictResponse.model_validate(predicted.json())
    assert [p.customer_id for p in parsed.predictions] == known_ids[:3]
    assert len(models.DecideResponse.model_validate(decided.json()).decisions) == 20
    assert models.ValidationErrorResponse.model_validate(refused.json()).detail
    assert models.ErrorResponse.model_validate(unknown.json()).field == "decision_id"
