"""Outcomes come back as features: /outcomes pushes the customer's offer counters through Feast's push
source, where Feast's own online retrieval reads them; a refresh rewrites them; erasure removes them."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from features import erasure
from features.decision_log import DecisionLog, offer_counts
from features.feature_repo.definitions import OFFER_FEATURES, OFFERS_VIEW
from features.store import open_store, remirror
from tests.serving.server_fixtures import start_server

pytestmark = pytest.mark.slow


def _feast_offers(ws, customer_id: str) -> dict:
    """The customer's row in the offer_outcomes view, read by Feast's SDK (not this project's reader)."""
    store = open_store(ws)
    read = store.get_online_features(
        features=store.get_feature_service(OFFERS_VIEW), entity_rows=[{"customer_id": customer_id}]
    ).to_dict()
    return {name: read[name][0] for name in OFFER_FEATURES}


def test_given_reported_outcomes_then_feast_serves_the_customers_offer_counts_until_erased(
    private_workspace, known_ids, tmp_path
):
    # given a decision with an action for a known customer, in a copy of the served world without
    # its decision history (other tests decide for the same customers, and their contacts would hold
    # the cooldowns and contact caps) and among enough customers that the holdout leaves an action
    ws = private_workspace
    shutil.rmtree(ws.root / "decisions", ignore_errors=True)
    server = start_server(ws, tmp_path / "server.log", workers=2)
    try:
        with server.client() as client:
            decided = [
                decision
                for start in (0, 100)
                for decision in client.post(
                    "/decide", json={"customer_ids": known_ids[start : start + 100]}
                ).json()["decisions"]
            ]
            chosen = next(d for d in decided if d["actions"])
            customer, action = chosen["customer_id"], chosen["actions"][0]["action"]
            log = DecisionLog.of(ws)
            prior = offer_counts(log.outcomes_of([customer]).get(customer, []), datetime.now(UTC))

            # when two workers get its outcomes at once: delivered, opened, accepted (with a retry), converted
            def post(outcome: str):
                body = {"decision_id": chosen["decision_id"], "action": action, "outcome": outcome}
                with server.client() as own:
                    return own.post("/outcomes", json=body)

            with ThreadPoolExecutor(max_workers=5) as pool:
                answers = list(pool.map(post, ["delivered", "opened", "accepted", "accepted", "converted"]))
    finally:
        server.stop()

    # then Feast's online retrieval serves the counts of the whole log: the action received and
    # accepted once, whatever the number of outcomes, retries and workers
    assert [a.status_code for a in answers] == [200] * 5
    served = _feast_offers(ws, customer)
    kinds = ("offers_received_30d", "offers_accepted_30d", "offers_rejected_30d")
    assert [served[k] - prior[k] for k in kinds] == [1, 1, 0]
    moment = datetime.fromtimestamp(served["offers_counted_at_ts"], UTC)
    assert served == pytest.approx(offer_counts(log.outcomes_of([customer])[customer], moment))
    assert all(set(a.json()["offers"]) == set(OFFER_FEATURES) for a in answers)
    log.close()

    # and a feature refresh rewrites the view from the log with the same counts
    remirror(ws, now=moment)
    assert _feast_offers(ws, customer) == pytest.approx(served)

    # and erasing the customer removes their row from the view
    erasure.forget(ws, erasure.Request(identifiers={"customer_id": [customer]}))
    assert all(value is None for value in _feast_offers(ws, customer).values())
