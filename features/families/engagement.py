"""Engagement family (source: events; transactions also count as purchases for cart abandonment).

Events are staged as customer × bucket (UTC day, split at non-midnight cutoffs) counts, so each
snapshot sums a few buckets instead of raw events. Session ids are compared by hash. Definitions:
- sessions: distinct session_id per bucket (a session crossing midnight counts in both days);
  without session_id, the number of ``session_start`` events;
- cart abandonment: a *cart session* is a session with an ``add_to_cart`` or ``checkout_start``;
  from its first such event c it has one day to convert (a ``checkout_complete`` in the session or
  a purchase transaction in [c, c + 1 day)). It is *decided* at c + 1 day and counted at t when
  decided in the 90 days before t; abandoned = not converted;
- ``engagement_activity_trend`` = (events last 30 days + 1) / (events in the 90 days before / 3 + 1),
  null when there were no events in those 120 days.
"""

from __future__ import annotations

from features.families import DAY_US, Family, FamilyContext, FeatureDef, ago
from features.families.base import EVENT_CODES, masked_count, masked_sum

SOURCE = "events"
MAX_WINDOW = 90
CART_WINDOW = 90
COUNTS = {
    "page_views": "page_view",
    "searches": "search",
    "product_views": "product_view",
    "cart_adds": "add_to_cart",
}


def _windows(ctx: FamilyContext) -> list[int]:
    return [w for w in ctx.windows if w <= MAX_WINDOW]


def _stage(ctx: FamilyContext) -> list[str]:
    sessions = "count(sess)" if ctx.has(f"{SOURCE}.session_id") else "sum(starts)"
    per_type = "".join(
        f",\n    {masked_count(f'et = {EVENT_CODES[etype]}')} AS {name}" for name, etype in COUNTS.items()
    )
    sums = "".join(f", sum({name}) AS {name}" for name in COUNTS)
    statements = [
        f"""
CREATE TABLE eng_buckets AS
WITH per_session AS (
  SELECT customer_key, {ctx.bucket("ts")} AS b, sess,
    count(*) AS n,
    {masked_count("app")} AS app,
    {masked_count(f"et = {EVENT_CODES['session_start']}")} AS starts{per_type},
    max(ts) AS last_ts
  FROM stg_ev GROUP BY ALL
)
SELECT customer_key, b, sum(n)::DOUBLE AS n, sum(app) AS app, ({sessions})::DOUBLE AS sessions{sums},
  max(last_ts) AS last_ts
FROM per_session GROUP BY customer_key, b
ORDER BY customer_key
"""
    ]
    if ctx.has(f"{SOURCE}.session_id"):
        statements.append(_carts_sql(ctx))
    return statements


def _carts_sql(ctx: FamilyContext) -> str:
    """Each cart session with its first conversion at or after the cart time ``c``: the first
    ``checkout_complete`` of the session (a join within the session), and the first purchase of
    the customer (the next purchase in one time-ordered stream of carts and purchases, where a
    purchase at ``c`` sorts after the cart). Plain joins and windows rather than an as-of join,
    which not every SQL engine has."""
    cart_types = f"{EVENT_CODES['add_to_cart']}, {EVENT_CODES['checkout_start']}"
    purchases = ""
    converted = f"coalesce(done_ts < c + {DAY_US}, false)"
    if ctx.present("transactions"):
        purchases = (
            ",\ntx AS (SELECT customer_key, ts FROM stg_orders WHERE lines > 0 "
            "AND customer_key IN (SELECT customer_key FROM carts)),\n"
            "stream AS (SELECT customer_key, c AS ts, 0 AS is_tx, c, done_ts FROM conv\n"
            "  UNION ALL SELECT customer_key, ts, 1 AS is_tx, NULL AS c, NULL AS done_ts FROM tx),\n"
            "conv2 AS (SELECT * FROM (SELECT customer_key, is_tx, c, done_ts, min(CASE WHEN is_tx = 1 THEN ts END) OVER (\n"
            "  PARTITION BY customer_key ORDER BY ts DESC, is_tx DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
            ") AS tx_ts FROM stream) AS s WHERE is_tx = 0)"
        )
        converted += f" OR coalesce(tx_ts < c + {DAY_US}, false)"
    final = "conv2" if purchases else "conv"
    return f"""
CREATE TABLE eng_carts AS
WITH carts AS (
  SELECT customer_key, sess, min(ts) AS c FROM stg_ev
  WHERE sess IS NOT NULL AND et IN ({cart_types}) GROUP BY customer_key, sess
),
done AS (SELECT customer_key, sess, ts FROM stg_ev WHERE sess IS NOT NULL AND et = {EVENT_CODES["checkout_complete"]}),
conv AS (
  SELECT carts.customer_key, carts.sess, carts.c, min(done.ts) AS done_ts FROM carts LEFT JOIN done
  ON carts.customer_key = done.customer_key AND carts.sess = done.sess AND carts.c <= done.ts
  GROUP BY carts.customer_key, carts.sess, carts.c
){purchases}
SELECT customer_key, c + {DAY_US} AS decided, NOT ({converted}) AS abandoned
FROM {final} ORDER BY customer_key
"""


def _aggregates(ctx: FamilyContext, t: int) -> list[tuple[str, str]]:
    def since(days: int) -> str:
        return f"b >= {ago(t, days)}"

    cols = []
    for w in _windows(ctx):
        cols.append(f"{masked_sum('sessions', since(w))} AS e_sessions_{w}")
        cols += [f"{masked_sum(name, since(w))} AS e_{name}_{w}" for name in COUNTS]
    cols += [
        f"{masked_sum('n', since(90))} AS e_n_90",
        f"{masked_sum('app', since(90))} AS e_app_90",
        f"{masked_sum('n', since(30))} AS e_n_last30",
        f"{masked_sum('n', f'{since(120)} AND b < {ago(t, 30)}')} AS e_n_prev90",
        "max(last_ts) AS e_last",
    ]
    body = ",\n    ".join(cols)
    out = [
        ("eng", f"SELECT customer_key,\n    {body}\n  FROM eng_buckets WHERE b < {t} GROUP BY customer_key")
    ]
    if ctx.has(f"{SOURCE}.session_id"):
        out.append(
            (
                "carts",
                "SELECT customer_key, count(*) AS c_n, count(*) FILTER (WHERE abandoned) AS c_abandoned "
                f"FROM eng_carts WHERE decided < {t} AND decided >= {ago(t, CART_WINDOW)} GROUP BY customer_key",
            )
        )
    return out


def _features(ctx: FamilyContext) -> list[FeatureDef]:
    feats: list[FeatureDef] = []
    for w in _windows(ctx):
        feats.append(
            FeatureDef(
                f"engagement_sessions_{w}d",
                f"sessions in the {w} days before t",
                f"coalesce(e_sessions_{w}, 0)",
            )
        )
        feats += [
            FeatureDef(
                f"engagement_{name}_{w}d",
                f"{etype} events in the {w} days before t",
                f"coalesce(e_{name}_{w}, 0)",
            )
            for name, etype in COUNTS.items()
        ]
    session = (f"{SOURCE}.session_id",)
    feats += [
        FeatureDef(
            "engagement_activity_trend",
            "(events last 30 days + 1) / (events in the 90 days before / 3 + 1); null without events in 120 days",
            "CASE WHEN coalesce(e_n_last30, 0) + coalesce(e_n_prev90, 0) > 0 "
            "THEN (coalesce(e_n_last30, 0) + 1) / (coalesce(e_n_prev90, 0) / 3 + 1) END",
        ),
        FeatureDef(
            "days_since_last_visit",
            "days from the last event of any type to t",
            f"({{t}} - e_last) / {DAY_US}",
        ),
        FeatureDef(
            "engagement_app_share_90d",
            "share of events from the app in the 90 days before t",
            "coalesce(e_app_90, 0) / nullif(e_n_90, 0)",
            needs=(f"{SOURCE}.channel",),
        ),
        FeatureDef(
            "engagement_cart_sessions_90d",
            "cart sessions decided (cart time + 1 day) in the 90 days before t",
            "coalesce(c_n, 0)",
            needs=session,
        ),
        FeatureDef(
            "engagement_cart_abandoned_90d",
            "cart sessions without a purchase within the session or 1 day, decided in the 90 days before t",
            "coalesce(c_abandoned, 0)",
            needs=session,
        ),
        FeatureDef(
            "engagement_cart_abandonment_rate_90d",
            "abandoned / cart sessions decided in the 90 days before t",
            "c_abandoned / nullif(c_n, 0)",
            needs=session,
        ),
    ]
    return feats


FAMILY = Family(
    name="engagement",
    sources=(SOURCE, "transactions"),
    available=lambda ctx: ctx.present(SOURCE),
    stage=_stage,
    aggregates=_aggregates,
    features=_features,
)
