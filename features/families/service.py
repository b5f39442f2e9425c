"""Service family (source: support_tickets).

Point in time: a ticket counts from ``opened_at``; its resolution (resolved_at, satisfaction) is known
at t only if ``resolved_at < t``, so a ticket resolved at or after t is unresolved at t. A *repeat
contact* is a ticket opened within 14 days after the customer's previous ticket. Of tickets resolved
at the same time, the last satisfaction is the highest (ties are ordered, so every engine agrees).
"""

from __future__ import annotations

from features.families import DAY_US, Family, FamilyContext, FeatureDef, ago

SOURCE = "support_tickets"
MIN_WINDOW = 30
REPEAT_DAYS = 14
HOUR_US = 3_600_000_000


def _windows(ctx: FamilyContext) -> list[int]:
    return [w for w in ctx.windows if w >= MIN_WINDOW]


def _stage(ctx: FamilyContext) -> list[str]:
    return [
        f"""
CREATE TABLE svc AS
WITH tk AS (
  SELECT customer_id, epoch_us(opened_at) AS opened, epoch_us(resolved_at) AS resolved,
         satisfaction::DOUBLE AS satisfaction, sentiment
  FROM raw_{SOURCE} WHERE customer_id IS NOT NULL AND opened_at IS NOT NULL
)
SELECT k.customer_key, opened, resolved, satisfaction, sentiment,
  coalesce(opened - lag(opened) OVER (PARTITION BY k.customer_key ORDER BY opened) <= {REPEAT_DAYS * DAY_US}, false)
    AS repeat
FROM tk JOIN customers_known k USING (customer_id)
ORDER BY k.customer_key
"""
    ]


def _aggregates(ctx: FamilyContext, t: int) -> list[tuple[str, str]]:
    cols = [f"count(*) FILTER (WHERE opened >= {ago(t, w)}) AS s_n_{w}" for w in _windows(ctx)]
    cols += [
        f"count(*) FILTER (WHERE resolved IS NULL OR resolved >= {t}) AS s_open",
        f"avg(resolved - opened) FILTER (WHERE resolved < {t}) AS s_ttr",
        f"count(*) FILTER (WHERE repeat AND opened >= {ago(t, 90)}) AS s_repeat_90",
        f"avg(sentiment) FILTER (WHERE opened >= {ago(t, 90)}) AS s_sentiment_90",
        "arg_max(satisfaction, {'resolved': resolved, 'satisfaction': satisfaction}) "
        f"FILTER (WHERE resolved < {t} AND satisfaction IS NOT NULL) AS s_last_sat",
        "max(opened) AS s_last",
    ]
    body = ",\n    ".join(cols)
    return [
        ("svc_agg", f"SELECT customer_key,\n    {body}\n  FROM svc WHERE opened < {t} GROUP BY customer_key")
    ]


def _features(ctx: FamilyContext) -> list[FeatureDef]:
    resolved = (f"{SOURCE}.resolved_at",)
    feats = [
        FeatureDef(
            f"service_tickets_{w}d", f"tickets opened in the {w} days before t", f"coalesce(s_n_{w}, 0)"
        )
        for w in _windows(ctx)
    ]
    feats += [
        FeatureDef(
            "service_tickets_unresolved",
            "tickets opened before t and not resolved before t",
            "coalesce(s_open, 0)",
            needs=resolved,
        ),
        FeatureDef(
            "service_resolution_hours_mean",
            "mean hours from opening to resolution, over tickets resolved before t",
            f"s_ttr / {HOUR_US}",
            needs=resolved,
        ),
        FeatureDef(
            "service_repeat_contacts_90d",
            f"tickets in the 90 days before t opened within {REPEAT_DAYS} days of the previous ticket",
            "coalesce(s_repeat_90, 0)",
        ),
        FeatureDef(
            "service_sentiment_mean_90d",
            "mean sentiment (-1..1) of tickets opened in the 90 days before t",
            "s_sentiment_90",
            needs=(f"{SOURCE}.sentiment",),
        ),
        FeatureDef(
            "service_last_satisfaction",
            "satisfaction (1..5) of the last ticket resolved before t",
            "s_last_sat",
            needs=(*resolved, f"{SOURCE}.satisfaction"),
        ),
        FeatureDef(
            "days_since_last_ticket", "days from the last ticket opened to t", f"({{t}} - s_last) / {DAY_US}"
        ),
    ]
    return feats


FAMILY = Family(
    name="service",
    sources=(SOURCE,),
    available=lambda ctx: ctx.present(SOURCE),
    stage=_stage,
    aggregates=_aggregates,
    features=_features,
)
