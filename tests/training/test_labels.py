"""Labels on hand-made timelines equal hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.labels import LabelsUnavailable
from training.tasks import churn, next_purchase, unmet_needs

need_column = unmet_needs.need_column


def churn_labels(*args):
    return churn.labels(*args).frame


def next_purchase_labels(*args):
    return next_purchase.labels(*args).frame


def unmet_needs_labels(*args):
    labels = unmet_needs.labels(*args)
    return labels.frame, dict(labels.extra["needs"])


T = pd.Timestamp("2025-03-01", tz="UTC")
AS_OF = T + pd.Timedelta(days=60)
H = 30


def at(days: float, seconds: float = 0) -> pd.Timestamp:
    return T + pd.Timedelta(days=days) + pd.Timedelta(seconds=seconds)


def transactions(*rows: tuple[str, pd.Timestamp, float, str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount", "category"])
    frame["timestamp"] = frame["timestamp"].astype("datetime64[us, UTC]")
    return frame


def events(*rows: tuple[str, pd.Timestamp, str, str | None]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "event_type", "category"])
    frame["timestamp"] = frame["timestamp"].astype("datetime64[us, UTC]")
    return frame


def by_customer(frame: pd.DataFrame, column: str) -> dict[str, object]:
    return dict(zip(frame["customer_id"], frame[column]))


@pytest.fixture
def churn_world() -> dict[str, pd.DataFrame]:
    tx = transactions(
        ("buyer", at(-10), 20.0, "home"),
        ("buyer", at(10), 20.0, "home"),
        ("browser", at(-10), 20.0, "home"),
        ("quiet", at(-10), 20.0, "home"),
        ("edge_in", at(-5), 20.0, "home"),
        ("edge_in", at(H), 20.0, "home"),
        ("edge_out", at(-5), 20.0, "home"),
        ("edge_out", at(H, seconds=1), 20.0, "home"),
        ("at_t", at(-5), 20.0, "home"),
        ("at_t", at(0), 20.0, "home"),
        ("returner", at(-5), 20.0, "home"),
        ("returner", at(5), -20.0, "home"),
        ("newcomer", at(5), 20.0, "home"),
        ("first_at_t", at(0), 20.0, "home"),
    )
    ev = events(("browser", at(20), "page_view", None), ("quiet", at(-1), "login", None))
    customers = pd.DataFrame(
        {"customer_id": ["signup_only"], "signup_at": pd.Series([at(-100)]).astype("datetime64[us, UTC]")}
    )
    return {"transactions": tx, "events": ev, "customers": customers}


def test_given_timelines_when_labelling_churn_then_labels_match_hand_computed_values(churn_world):
    labels = churn_labels(churn_world, [T], H, AS_OF)

    assert by_customer(labels, "churn") == {
        "buyer": 0,  # purchase inside the window
        "browser": 0,  # engagement inside the window counts as activity
        "quiet": 1,  # activity only before t
        "edge_in": 0,  # t + H itself is inside (t, t+H]
        "edge_out": 1,  # one second after t + H is outside
        "at_t": 1,  # a fact at exactly t is in neither features nor label
        "returner": 1,  # a return is not a purchase
        "signup_only": 1,  # known through signup only
    }
    assert set(labels["event_timestamp"]) == {T}


def test_given_a_customer_first_seen_at_or_after_t_when_labelling_then_it_is_not_a_row(churn_world):
    labels = churn_labels(churn_world, [T], H, AS_OF)

    assert {"newcomer", "first_at_t"}.isdisjoint(labels["customer_id"])


def test_given_transactions_only_when_labelling_churn_then_churn_means_no_purchase(churn_world):
    tables = {"transactions": churn_world["transactions"]}

    labels = by_customer(churn_labels(tables, [T], H, AS_OF), "churn")

    assert labels["browser"] == 1  # its page view is unknown without the events source
    assert labels["buyer"] == 0 and labels["quiet"] == 1


def test_given_an_empty_events_table_when_labelling_churn_then_it_counts_as_absent(churn_world):
    tables = {**churn_world, "events": churn_world["events"].iloc[0:0]}

    assert by_customer(churn_labels(tables, [T], H, AS_OF), "churn")["browser"] == 1


def test_given_a_cutoff_whose_window_ends_after_as_of_when_labelling_then_it_is_refused(churn_world):
    with pytest.raises(ValueError, match="ends after as_of"):
        churn_labels(churn_world, [AS_OF - pd.Timedelta(days=H - 1)], H, AS_OF)


def test_given_timelines_when_labelling_next_purchase_then_days_censoring_and_category_match():
    tx = transactions(
        ("buyer", at(-10), 20.0, "home"),
        ("buyer", at(10), 20.0, "electronics"),
        ("buyer", at(15), 20.0, "fashion"),
        ("late", at(-10), 20.0, "home"),
        ("late", at(45), 20.0, "books"),
        ("quiet", at(-10), 20.0, "home"),
        ("future", at(-10), 20.0, "home"),
        ("future", at(70), 20.0, "home"),  # after as_of: never read
        ("return_only", at(-10), 20.0, "home"),
        ("return_only", at(3), -20.0, "home"),
    )

    labels = next_purchase_labels({"transactions": tx}, [T], H, AS_OF).set_index("customer_id")

    expected = pd.DataFrame(
        {
            "purchase": [1, 0, 0, 0, 0],
            "days_to_next": [10.0, 45.0, 60.0, 60.0, 60.0],
            "censored": [False, False, True, True, True],
            "next_category": ["electronics", None, None, None, None],
        },
        index=pd.Index(["buyer", "late", "quiet", "future", "return_only"], name="customer_id"),
    )
    pd.testing.assert_frame_equal(labels.loc[expected.index, expected.columns], expected, check_dtype=False)


def test_given_several_cutoffs_when_labelling_next_purchase_then_each_row_uses_its_own_window():
    tx = transactions(("a", at(-40), 10.0, "home"), ("a", at(-20), 10.0, "toys"), ("a", at(5), 10.0, "books"))
    earlier = T - pd.Timedelta(days=30)

    labels = next_purchase_labels({"transactions": tx}, [earlier, T], H, AS_OF)
    rows = labels.set_index("event_timestamp")

    assert rows.loc[earlier, "next_category"] == "toys"
    assert rows.loc[earlier, "days_to_next"] == pytest.approx(10)
    assert rows.loc[T, "next_category"] == "books" and rows.loc[T, "days_to_next"] == pytest.approx(5)


@pytest.fixture
def needs_world() -> dict[str, pd.DataFrame]:
    people = ["searcher", "fulfilled", "bought_only", "late_signal", "viewer", "early_signal", "pager"]
    tx = transactions(
        *[(person, at(-20), 10.0, "toys") for person in people],
        ("fulfilled", at(10), 10.0, "home"),
        ("bought_only", at(5), 10.0, "books"),
        ("viewer", at(3), 10.0, "home"),
    )
    ev = events(
        ("searcher", at(5), "search", "home"),
        ("fulfilled", at(5), "search", "home"),
        ("late_signal", at(H + 1), "wishlist_add", "books"),
        ("viewer", at(2), "product_view", "books"),
        ("early_signal", at(-3), "search", "home"),
        ("pager", at(5), "page_view", "home"),
    )
    return {"transactions": tx, "events": ev}


def test_given_timelines_when_labelling_unmet_needs_then_demand_without_fulfilment_is_a_need(needs_world):
    labels, columns = unmet_needs_labels(needs_world, [T], H, AS_OF)

    assert columns == {"books": "need_books", "home": "need_home"}
    rows = labels.set_index("customer_id")[["need_home", "need_books"]]
    assert rows.loc["searcher"].tolist() == [1, 0]  # searched home, bought nothing in home
    assert rows.loc["fulfilled"].tolist() == [0, 0]  # searched home and bought home
    assert rows.loc["bought_only"].tolist() == [0, 0]  # purchase without a demand signal
    assert rows.loc["late_signal"].tolist() == [0, 0]  # signal after t + H
    assert rows.loc["viewer"].tolist() == [0, 1]  # viewed books, bought home instead
    assert rows.loc["early_signal"].tolist() == [0, 0]  # signal before t belongs to features
    assert rows.loc["pager"].tolist() == [0, 0]  # a page view is not a demand signal


def test_given_transactions_only_when_labelling_unmet_needs_then_it_is_refused_with_a_reason(needs_world):
    with pytest.raises(LabelsUnavailable) as refused:
        unmet_needs_labels({"transactions": needs_world["transactions"]}, [T], H, AS_OF)

    assert refused.value.task == "unmet_needs"
    assert "transactions-only" in refused.value.reason


def test_given_events_without_categories_when_labelling_unmet_needs_then_it_is_refused(needs_world):
    tables = {**needs_world, "events": needs_world["events"].assign(category=None)}

    with pytest.raises(LabelsUnavailable, match="no demand signal"):
        unmet_needs_labels(tables, [T], H, AS_OF)


def test_given_free_text_categories_when_naming_need_columns_then_names_are_snake_case():
    assert need_column("Home & Garden") == "need_home_garden"
    assert need_column("électronique") == "need_lectronique"


def test_given_a_resolution_after_as_of_when_reading_tables_then_it_is_not_known_yet():
    from training.labels import visible

    tickets = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "opened_at": pd.Series([at(-5), at(70)]).astype("datetime64[us, UTC]"),
            "resolved_at": pd.Series([at(65), pd.NaT]).astype("datetime64[us, UTC]"),
            "satisfaction": [4.0, np.nan],
        }
    )

    seen = visible({"support_tickets": tickets}, AS_OF)["support_tickets"]

    assert seen["customer_id"].tolist() == ["a"]  # opened after as_of: dropped
    assert seen["resolved_at"].isna().all() and seen["satisfaction"].isna().all()
