"""Needs family (sources: events, transactions, support_tickets): demand signals versus purchases.

Signal events are staged sorted by time, so each snapshot reads only its 90 days of them; purchases
come from the per-category line counts of ``stg_orders``. For each of the top categories by event volume (``top_categories_sql``; at most 10, listed in the
manifest as ``categories``): searches, product views and wishlist adds in the category over the 90
days before t, purchase lines in the category over the same days, and the demand gap
``max(signals - purchases, 0)``. Plus tickets about ``availability`` still unresolved at t. Needs
events with a category; without it the family is absent.
"""

from __future__ import annotations

from features.families import Family, FamilyContext, FeatureDef, ago, slug
from features.families.base import EVENT_CODES, masked_count

WINDOW = 90
SIGNALS = {"searches": "search", "views": "product_view", "wishlist": "wishlist_add"}
AVAILABILITY_TOPIC = "availability"


def top_categories_sql(source: str, limit: int) -> str:
    """Categories ranked by row count in ``raw_<source>`` (ties by name), most frequent first."""
    return (
        f"SELECT category FROM raw_{source} WHERE category IS NOT NULL AND category <> '' "
        f"GROUP BY category ORDER BY count(*) DESC, category LIMIT {int(limit)}"
    )


def distinct_slugs(categories: list[str]) -> tuple[str, ...]:
    """Keep the first category of each distinct, non-empty slug (feature names must be unique)."""
    seen: dict[str, str] = {}
    for category in categories:
        seen.setdefault(slug(category), category)
    return tuple(c for s, c in seen.items() if s)


def _stage(ctx: FamilyContext) -> list[str]:
    codes = ", ".join(str(EVENT_CODES[e]) for e in SIGNALS.values())
    statements = [
        "CREATE TABLE need_ev AS SELECT customer_key, ts, cat, et FROM stg_ev "
        f"WHERE cat IS NOT NULL AND et IN ({codes}) ORDER BY ts"
    ]
    if ctx.has("support_tickets.topic"):
        statements.append(
            "CREATE TABLE need_tk AS SELECT k.customer_key, epoch_us(opened_at) AS opened, "
            "epoch_us(resolved_at) AS resolved FROM raw_support_tickets JOIN customers_known k USING (customer_id) "
            f"WHERE opened_at IS NOT NULL AND lower(topic) = '{AVAILABILITY_TOPIC}'"
        )
    return statements


def _aggregates(ctx: FamilyContext, t: int) -> list[tuple[str, str]]:
    n = len(ctx.categories)
    window = f"ts >= {ago(t, WINDOW)} AND ts < {t}"
    signals = ", ".join(
        f"{masked_count(f'cat = {i} AND et = {EVENT_CODES[etype]}')} AS n_{name}_{i}"
        for i in range(n)
        for name, etype in SIGNALS.items()
    )
    out = [
        ("need_ev_agg", f"SELECT customer_key, {signals} FROM need_ev WHERE {window} GROUP BY customer_key")
    ]
    if ctx.has("transactions.category"):
        bought = ", ".join(f"sum(cat_{i}) AS n_bought_{i}" for i in range(n))
        out.append(
            (
                "need_tx_agg",
                f"SELECT customer_key, {bought} FROM stg_orders WHERE {window} GROUP BY customer_key",
            )
        )
    if ctx.has("support_tickets.topic"):
        out.append(
            (
                "need_tk_agg",
                f"SELECT customer_key, count(*) FILTER (WHERE resolved IS NULL OR resolved >= {t}) AS n_avail_open "
                f"FROM need_tk WHERE opened < {t} GROUP BY customer_key",
            )
        )
    return out


def _features(ctx: FamilyContext) -> list[FeatureDef]:
    feats: list[FeatureDef] = []
    bought = ("transactions.category",)
    for i, category in enumerate(ctx.categories):
        s = slug(category)
        feats += [
            FeatureDef(
                f"need_{s}_{name}_{WINDOW}d",
                f"{etype} events in category {category} in the {WINDOW} days before t",
                f"coalesce(n_{name}_{i}, 0)",
            )
            for name, etype in SIGNALS.items()
        ]
        signals = " + ".join(f"coalesce(n_{name}_{i}, 0)" for name in SIGNALS)
        feats += [
            FeatureDef(
                f"need_{s}_purchases_{WINDOW}d",
                f"purchase lines in category {category} in the {WINDOW} days before t",
                f"coalesce(n_bought_{i}, 0)",
                needs=bought,
            ),
            FeatureDef(
                f"need_{s}_gap_{WINDOW}d",
                f"demand gap in {category}: max(searches + views + wishlist adds - purchases, 0) over {WINDOW} days",
                f"greatest({signals} - coalesce(n_bought_{i}, 0), 0)",
                needs=bought,
            ),
        ]
    feats.append(
        FeatureDef(
            "need_availability_tickets_open",
            "tickets about availability opened before t and unresolved at t",
            "coalesce(n_avail_open, 0)",
            needs=("support_tickets.topic",),
        )
    )
    return feats


FAMILY = Family(
    name="needs",
    sources=("events", "transactions", "support_tickets"),
    available=lambda ctx: ctx.has("events.category") and bool(ctx.categories),
    stage=_stage,
    aggregates=_aggregates,
    features=_features,
)
