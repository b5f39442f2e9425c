"""Marketing family (source: marketing): messages sent, opened, clicked; unsubscribes.

Staged as customer × bucket counts (UTC day, split at non-midnight cutoffs). Rates are per message
sent in the same window and may exceed 1 when a message is opened or clicked several times.
"""

from __future__ import annotations

from features.families import DAY_US, Family, FamilyContext, FeatureDef, ago, sql_str
from features.families.base import masked_count, masked_sum

SOURCE = "marketing"
ACTIONS = {"sent": "sent", "opens": "opened", "clicks": "clicked", "unsubscribes": "unsubscribed"}
MIN_WINDOW, MAX_WINDOW, RATE_WINDOW = 30, 90, 90


def _windows(ctx: FamilyContext) -> list[int]:
    return [w for w in ctx.windows if MIN_WINDOW <= w <= MAX_WINDOW]


def _stage(ctx: FamilyContext) -> list[str]:
    counts = "".join(f",\n    {masked_count(f'action = {sql_str(a)}')} AS {n}" for n, a in ACTIONS.items())
    return [
        f"""
CREATE TABLE mkt AS
WITH m AS (
  SELECT customer_id, epoch_us(timestamp) AS ts, lower(action) AS action
  FROM raw_{SOURCE} WHERE customer_id IS NOT NULL AND timestamp IS NOT NULL
)
SELECT k.customer_key, {ctx.bucket("ts")} AS b{counts},
  max(ts) FILTER (WHERE action = 'opened') AS last_open, max(ts) AS last_ts
FROM m JOIN customers_known k USING (customer_id)
GROUP BY ALL
ORDER BY k.customer_key
"""
    ]


def _aggregates(ctx: FamilyContext, t: int) -> list[tuple[str, str]]:
    windows = sorted({*_windows(ctx), RATE_WINDOW})
    cols = [
        f"{masked_sum(n, f'b >= {ago(t, w)}')} AS m_{n}_{w}"
        for w in windows
        for n in ("sent", "opens", "clicks")
    ]
    cols += ["sum(unsubscribes) AS m_unsub", "max(last_open) AS m_last_open", "max(last_ts) AS m_last"]
    body = ",\n    ".join(cols)
    return [("mkt_agg", f"SELECT customer_key,\n    {body}\n  FROM mkt WHERE b < {t} GROUP BY customer_key")]


def _features(ctx: FamilyContext) -> list[FeatureDef]:
    action = (f"{SOURCE}.action",)
    feats = [
        FeatureDef(
            f"marketing_{n}_{w}d",
            f"marketing messages {ACTIONS[n]} in the {w} days before t",
            f"coalesce(m_{n}_{w}, 0)",
            needs=action,
        )
        for w in _windows(ctx)
        for n in ("sent", "opens", "clicks")
    ]
    r = RATE_WINDOW
    feats += [
        FeatureDef(
            f"marketing_open_rate_{r}d",
            f"opens / messages sent in the {r} days before t",
            f"coalesce(m_opens_{r}, 0) / nullif(m_sent_{r}, 0)",
            needs=action,
        ),
        FeatureDef(
            f"marketing_click_rate_{r}d",
            f"clicks / messages sent in the {r} days before t",
            f"coalesce(m_clicks_{r}, 0) / nullif(m_sent_{r}, 0)",
            needs=action,
        ),
        FeatureDef(
            "marketing_unsubscribed",
            "1 if the customer unsubscribed at any time before t, else 0",
            "CASE WHEN coalesce(m_unsub, 0) > 0 THEN 1 ELSE 0 END",
            needs=action,
        ),
        FeatureDef(
            "days_since_last_open",
            "days from the last marketing open to t",
            f"({{t}} - m_last_open) / {DAY_US}",
            needs=action,
        ),
        FeatureDef(
            "days_since_last_marketing_contact",
            "days from the last marketing interaction of any kind to t",
            f"({{t}} - m_last) / {DAY_US}",
        ),
    ]
    return feats


FAMILY = Family(
    name="marketing",
    sources=(SOURCE,),
    available=lambda ctx: ctx.present(SOURCE),
    stage=_stage,
    aggregates=_aggregates,
    features=_features,
)
