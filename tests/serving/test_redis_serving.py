"""The prediction API served from the Redis online store (the real server on 127.0.0.1:6379).

The world is a private copy of the served world (``server_fixtures``), applied and materialised
under a Feast project of its own (so no other test shares its keys), and served by ``cxpredict
serve`` with the Redis settings in its environment: the same code path a deployment takes. The
module shares one world and one server; the refresh test moves their snapshot, so it comes last
(pytest runs a module's tests in file order).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
import redis

from tests.serving.server_fixtures import start_server

pytestmark = [pytest.mark.services, pytest.mark.slow]

REDIS = "127.0.0.1:6379"
SNAPSHOT = datetime(2026, 11, 1, tzinfo=UTC)
LATER = datetime(2026, 11, 20, tzinfo=UTC)


class RedisWorld:
    """A workspace whose online store is a Feast project of its own on the real Redis server."""

    def __init__(self, source, target, copy_workspace) -> None:
        from features.feature_repo.definitions import RepoSettings
        from features.store import apply_repo, materialize_latest

        self.client = redis.Redis(host="127.0.0.1", port=6379)
        try:
            self.client.ping()
        except redis.ConnectionError:
            pytest.fail("Redis is not running on 127.0.0.1:6379")
        self.project = f"cxp_serve_{uuid.uuid4().hex[:12]}"
        self.settings = RepoSettings(
            online_store="redis", redis_connection_string=REDIS, project=self.project
        )
        self.env = {
            "CXPREDICT_FEAST_ONLINE_STORE": "redis",
            "CXPREDICT_FEAST_REDIS_CONNECTION_STRING": REDIS,
            "CXPREDICT_FEAST_PROJECT": self.project,
        }
        self.ws = copy_workspace(source, target)
        apply_repo(self.ws, self.settings)
        materialize_latest(self.ws, end=SNAPSHOT, settings=self.settings)

    def store(self):
        from features.store import open_store

        return open_store(self.ws, self.settings)

    def customer_keys(self) -> int:
        return sum(1 for _ in self.client.scan_iter(match=b"*" + self.project.encode()))

    def close(self) -> None:
        doomed = [*self.client.scan_iter(match=f"*{self.project}*".encode())]
        if doomed:
            self.client.delete(*doomed)
        self.client.close()


@pytest.fixture(scope="module")
def redis_world(served_workspace, tmp_path_factory, copy_workspace):
    world = RedisWorld(served_workspace, tmp_path_factory.mktemp("redis") / "ws", copy_workspace)
    yield world
    world.close()


@pytest.fixture(scope="module")
def redis_api(redis_world, tmp_path_factory):
    server = start_server(redis_world.ws, tmp_path_factory.mktemp("logs") / "redis.log", env=redis_world.env)
    yield server
    server.stop()


def _predict(client: httpx.Client, ids: list[str]) -> dict:
    answer = client.post("/predict", json={"customer_ids": ids})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _stable(node):
    """An answer less what moves with the clock: the request time and the values of request-time
    (``*_now``) features, which must not move a score within a test."""
    if isinstance(node, dict):
        if str(node.get("feature", "")).endswith("_now"):
            node = {**node, "value": None}
        return {key: _stable(value) for key, value in node.items() if key != "request_time"}
    if isinstance(node, list):
        return [_stable(value) for value in node]
    return node


def test_given_the_redis_store_then_predict_answers_as_the_sqlite_store_does(
    redis_world, redis_api, api, known_ids
):
    # given the served world from its SQLite store (the session's server) and its copy from Redis
    ids = known_ids[:40]  # no test pushes events to these customers
    assert redis_world.customer_keys() > len(ids)
    # when both are asked for the same customers (and one the store does not know)
    with api.client() as client:
        on_sqlite = _predict(client, [*ids, "NEVER-SEEN-REDIS"])
    with redis_api.client() as client:
        on_redis = _predict(client, [*ids, "NEVER-SEEN-REDIS"])
        ready = client.get("/readyz").json()

    # then every block of every customer is the same, from the same snapshot
    assert _stable(on_redis) == _stable(on_sqlite)
    assert {p["features_as_of"] for p in on_redis["predictions"][:-1]} == {"2026-11-01T00:00:00Z"}
    assert on_redis["predictions"][-1]["cold_start"] is True
    assert ready["features_as_of"] == "2026-11-01T00:00:00Z"


def test_given_the_redis_store_an_event_push_reaches_the_next_prediction_and_the_store(
    redis_world, redis_api, known_ids
):
    # given a known customer and a bystander (from the end: the other test here reads the start)
    target, bystander = known_ids[-3], known_ids[-4]
    with redis_api.client() as client:
        before = {p["customer_id"]: p for p in _predict(client, [target, bystander])["predictions"]}
        # when the target opens three tickets and starts two sessions, through /events
        for event_type in ("ticket_opened",) * 3 + ("session_start",) * 2:
            pushed = client.post("/events", json={"customer_id": target, "event_type": event_type})
            assert pushed.status_code == 200, pushed.text
        after = {p["customer_id"]: p for p in _predict(client, [target, bystander])["predictions"]}

    # then the counters hold the events, the target's next prediction moved and the bystander's did not
    counters = pushed.json()["realtime"]
    assert pushed.json()["known_customer"] is True
    assert counters["realtime_tickets_opened"] == 3 and counters["realtime_sessions"] == 2
    assert _stable(after[target]["churn"]) != _stable(before[target]["churn"])
    assert after[target]["features_as_of"] == before[target]["features_as_of"]
    assert _stable(after[bystander]) == _stable(before[bystander])
    # and Feast's own SDK reads the mirrored counters back from Redis
    store = redis_world.store()
    mirrored = store.get_online_features(
        features=["realtime:realtime_tickets_opened", "realtime:realtime_sessions"],
        entity_rows=[{"customer_id": target}, {"customer_id": bystander}],
    ).to_dict()
    assert mirrored["realtime_tickets_opened"] == [3.0, None]
    assert mirrored["realtime_sessions"] == [2.0, None]


def test_given_the_redis_store_an_outcome_reaches_feasts_offer_view_on_redis(
    redis_world, redis_api, known_ids
):
    # given a decision with an action for customers no other test here touches
    with redis_api.client() as client:
        decided = client.post("/decide", json={"customer_ids": known_ids[-30:-5]}).json()["decisions"]
        chosen = next(d for d in decided if d["actions"])
        body = {"decision_id": chosen["decision_id"], "action": chosen["actions"][0]["action"]}
        # when it is delivered and rejected
        answers = [client.post("/outcomes", json=body | {"outcome": o}) for o in ("delivered", "rejected")]

    # then the answer's offer counts are what Feast's own SDK reads back from Redis
    assert [a.status_code for a in answers] == [200, 200]
    offers = answers[-1].json()["offers"]
    assert offers["offers_rejected_30d"] >= 1 and offers["offers_received_30d"] >= 1
    read = (
        redis_world.store()
        .get_online_features(
            features=["offer_outcomes:offers_received_30d", "offer_outcomes:offers_rejected_30d"],
            entity_rows=[{"customer_id": chosen["customer_id"]}],
        )
        .to_dict()
    )
    assert read["offers_received_30d"] == [offers["offers_received_30d"]]
    assert read["offers_rejected_30d"] == [offers["offers_rejected_30d"]]


def _features(ws, env: dict, as_of: datetime) -> None:
    """``cxpredict features --as-of`` in its own process with the world's Redis settings."""
    command = [sys.executable, "-m", "cxpredict.cli", "features", "--workspace", str(ws.root)]
    command += ["--as-of", as_of.date().isoformat()]
    done = subprocess.run(command, env=dict(os.environ, **env), capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:].decode(errors="replace")


def test_given_a_refresh_under_load_then_every_answer_is_one_whole_snapshot(
    redis_world, redis_api, known_ids
):
    # given the Redis-served world on its 2026-11-01 snapshot and the answer for 25 customers there
    world, server = redis_world, redis_api
    ids = known_ids[:25]
    answers: list[tuple[float, dict]] = []
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with server.client() as client:
            while not stop.is_set():
                began = time.monotonic()
                answer = client.post("/predict", json={"customer_ids": ids})
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code}: {answer.text[:300]}")
                else:
                    answers.append((began, answer.json()))

    with server.client() as client:
        old = _predict(client, ids)
    # when three threads call /predict while `cxpredict features` refreshes to 2026-11-20
    workers = [threading.Thread(target=load) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        _features(world.ws, world.env, LATER)
        committed = time.monotonic()
        deadline = committed + 60
        while not any(began > committed for began, _ in answers) and time.monotonic() < deadline:
            time.sleep(0.05)  # until a request sent after the swap has been answered
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    with server.client() as client:
        new = _predict(client, ids)
        ready = client.get("/readyz").json()

    # then every answer is entirely the old or entirely the new one: snapshot time and every block
    assert not failures
    assert {p["features_as_of"] for p in old["predictions"]} == {"2026-11-01T00:00:00Z"}
    assert {p["features_as_of"] for p in new["predictions"]} == {"2026-11-20T00:00:00Z"}
    assert ready["features_as_of"] == "2026-11-20T00:00:00Z"
    before, after = _stable(old)["predictions"], _stable(new)["predictions"]
    assert all(b != a for b, a in zip(before, after, strict=True))
    seen = [(began, _stable(body)["predictions"]) for began, body in answers]
    assert len(seen) > 5 and all(answer in (before, after) for _, answer in seen)
    assert any(answer == before for _, answer in seen)
    late = [answer for began, answer in seen if began > committed]
    assert late and all(answer == after for answer in late)
