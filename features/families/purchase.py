"""Purchase family (source: transactions): recency, frequency, monetary value, gaps, basket, mix.

Definitions:
- a *return* is a row with ``returned`` true or a negative amount; every other row is a *purchase line*;
- a *purchase occasion* is a (timestamp, order_id) group holding at least one purchase line (order
  lines share their timestamp; without order_id, each timestamp is one occasion);
- counts and amounts are over purchase lines; gaps are between consecutive occasions, over all history
  before t; shares and rates are over the 365 days before t;
- ``purchase_occasions``, ``purchase_rate_per_30d`` and ``purchase_overdue_ratio`` are the
  buy-till-you-die statistics (frequency, rate per unit of tenure, recency against the customer's
  own rhythm) that make transactions-only data informative;
- ``purchase_spend_trend`` = (spend in the last 30 days + 1) / (spend in the 90 days before those / 3 + 1),
  null when the customer spent nothing in those 120 days.
"""

from __future__ import annotations

from features.families import DAY_US, Family, FamilyContext, FeatureDef, ago, slug
from features.families.base import CHANNEL_CODES, masked_count, masked_sum

SOURCE = "transactions"
YEAR = 365
TREND_RECENT, TREND_BEFORE = 30, 90


def _stage(ctx: FamilyContext) -> list[str]:
    """Nothing of its own: reads the shared ``stg_orders`` (see ``features.families.base``)."""
    return []


def _aggregates(ctx: FamilyContext, t: int) -> list[tuple[str, str]]:
    def since(days: int) -> str:
        return f"ts >= {ago(t, days)}"

    cols = []
    for w in sorted({*ctx.windows, YEAR, TREND_RECENT}):
        cols += [
            f"{masked_sum('lines', since(w))} AS p_lines_{w}",
            f"{masked_sum('amount', since(w))} AS p_amt_{w}",
            f"{masked_count(f'lines > 0 AND {since(w)}')} AS p_orders_{w}",
        ]
    y = since(YEAR)
    cols += [
        "max(CASE WHEN lines > 0 THEN ts END) AS p_last",
        "min(CASE WHEN lines > 0 THEN ts END) AS p_first",
        f"{masked_count('lines > 0')} AS p_occ",
        "max(prev_ts) AS p_prev",
        f"{masked_sum('qty', y)} AS p_qty_y",
        f"{masked_sum('disc_lines', y)} AS p_disc_lines_y",
        f"{masked_sum('disc_sum', y)} AS p_disc_sum_y",
        f"{masked_sum('disc_n', y)} AS p_disc_n_y",
        f"{masked_sum('returns', y)} AS p_returns_y",
        f"{masked_sum('amount', f'{since(TREND_RECENT + TREND_BEFORE)} AND ts < {ago(t, TREND_RECENT)}')} AS p_amt_prev",
    ]
    cols += [f"{masked_sum(f'ch_{c}', y)} AS p_ch_{c}_y" for c in CHANNEL_CODES]
    cols += [f"{masked_sum(f'cat_{i}', y)} AS p_cat_{i}_y" for i in range(len(ctx.categories))]
    body = ",\n    ".join(cols)
    return [
        ("pur", f"SELECT customer_key,\n    {body}\n  FROM stg_orders WHERE ts < {t} GROUP BY customer_key")
    ]


def _features(ctx: FamilyContext) -> list[FeatureDef]:
    feats: list[FeatureDef] = []
    for w in ctx.windows:
        feats += [
            FeatureDef(
                f"purchase_count_{w}d",
                f"purchase lines in the {w} days before t",
                f"coalesce(p_lines_{w}, 0)",
            ),
            FeatureDef(
                f"purchase_amount_{w}d",
                f"spend on purchase lines in the {w} days before t",
                f"coalesce(p_amt_{w}, 0)",
            ),
            FeatureDef(
                f"purchase_orders_{w}d",
                f"distinct orders in the {w} days before t",
                f"coalesce(p_orders_{w}, 0)",
                needs=(f"{SOURCE}.order_id",),
            ),
        ]
    mean_gap = "(p_last - p_first) / (p_occ - 1)"
    last_gap = "(p_last - p_prev)"
    feats += [
        FeatureDef(
            "days_since_last_purchase", "days from the last purchase to t", f"({{t}} - p_last) / {DAY_US}"
        ),
        FeatureDef(
            "days_since_first_purchase", "days from the first purchase to t", f"({{t}} - p_first) / {DAY_US}"
        ),
        FeatureDef(
            "purchase_gap_mean_days",
            "mean days between consecutive purchase occasions before t (null below two occasions)",
            f"CASE WHEN p_occ >= 2 THEN {mean_gap} / {DAY_US} END",
        ),
        FeatureDef(
            "purchase_occasions",
            "purchase occasions before t, over all history (the buy-till-you-die frequency + 1)",
            "coalesce(p_occ, 0)",
        ),
        FeatureDef(
            "purchase_rate_per_30d",
            "purchase occasions per 30 days of tenure (first purchase to t, at least one day)",
            f"CASE WHEN p_occ >= 1 THEN 30.0 * p_occ / greatest(({{t}} - p_first) / {DAY_US}, 1) END",
        ),
        FeatureDef(
            "purchase_overdue_ratio",
            "days since the last purchase / the customer's own mean gap (above 1: later than usual)",
            f"CASE WHEN p_occ >= 2 AND p_last > p_first THEN (({{t}} - p_last) / {DAY_US}) / ({mean_gap} / {DAY_US}) END",
        ),
        FeatureDef(
            "purchase_gap_last_days",
            "days between the last two purchase occasions before t",
            f"CASE WHEN p_occ >= 2 THEN {last_gap} / {DAY_US} END",
        ),
        FeatureDef(
            "purchase_gap_trend",
            "last gap / mean gap (above 1: slowing down)",
            f"CASE WHEN p_occ >= 2 AND p_last > p_first THEN {last_gap} / ({mean_gap}) END",
        ),
        FeatureDef(
            "purchase_basket_value_365d",
            "mean spend per purchase occasion in the 365 days before t",
            f"p_amt_{YEAR} / nullif(p_orders_{YEAR}, 0)",
        ),
        FeatureDef(
            "purchase_basket_size_365d",
            "mean quantity per purchase occasion in the 365 days before t",
            f"p_qty_y / nullif(p_orders_{YEAR}, 0)",
            needs=(f"{SOURCE}.quantity",),
        ),
        FeatureDef(
            "purchase_discount_share_365d",
            "share of purchase lines with a discount in the 365 days before t",
            f"coalesce(p_disc_lines_y, 0) / nullif(p_lines_{YEAR}, 0)",
            needs=(f"{SOURCE}.discount",),
        ),
        FeatureDef(
            "purchase_discount_mean_365d",
            "mean discount fraction of purchase lines in the 365 days before t",
            "p_disc_sum_y / nullif(p_disc_n_y, 0)",
            needs=(f"{SOURCE}.discount",),
        ),
        FeatureDef(
            "purchase_return_rate_365d",
            "returns / purchase lines in the 365 days before t",
            f"coalesce(p_returns_y, 0) / nullif(p_lines_{YEAR}, 0)",
            needs=(f"{SOURCE}.returned",),
        ),
    ]
    feats += [
        FeatureDef(
            f"purchase_channel_share_{c}_365d",
            f"share of purchase lines bought via {c} in the 365 days before t",
            f"coalesce(p_ch_{c}_y, 0) / nullif(p_lines_{YEAR}, 0)",
            needs=(f"{SOURCE}.channel",),
        )
        for c in CHANNEL_CODES
    ]
    feats += [
        FeatureDef(
            f"purchase_category_share_{slug(c)}_365d",
            f"share of purchase lines in category {c} in the 365 days before t",
            f"coalesce(p_cat_{i}_y, 0) / nullif(p_lines_{YEAR}, 0)",
            needs=(f"{SOURCE}.category",),
        )
        for i, c in enumerate(ctx.categories)
    ]
    feats.append(
        FeatureDef(
            "purchase_spend_trend",
            "(spend last 30 days + 1) / (spend in the 90 days before / 3 + 1); null without spend in 120 days",
            f"CASE WHEN coalesce(p_amt_{TREND_RECENT}, 0) + coalesce(p_amt_prev, 0) > 0 "
            f"THEN (coalesce(p_amt_{TREND_RECENT}, 0) + 1) / (coalesce(p_amt_prev, 0) / 3 + 1) END",
        )
    )
    return feats


FAMILY = Family(
    name="purchase",
    sources=(SOURCE,),
    available=lambda ctx: ctx.present(SOURCE),
    stage=_stage,
    aggregates=_aggregates,
    features=_features,
)
