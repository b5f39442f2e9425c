"""Voice family (source: surveys): last NPS / CSAT, their change, recency and volume of surveys.

NPS category follows the usual bands: 0–6 detractor, 7–8 passive, 9–10 promoter. Answers of one
kind are ordered by (time, score); ``rn`` numbers them in the same window as ``prev`` (the score
before), so the last answer and its predecessor are one row even when two answers share a time.
"""

from __future__ import annotations

from features.families import DAY_US, Family, FamilyContext, FeatureDef, ago

SOURCE = "surveys"
KINDS = ("nps", "csat")


def _stage(ctx: FamilyContext) -> list[str]:
    return [
        f"""
CREATE TABLE voice AS
WITH sv AS (
  SELECT customer_id, epoch_us(timestamp) AS ts, lower(kind) AS kind, score::DOUBLE AS score
  FROM raw_{SOURCE} WHERE customer_id IS NOT NULL AND timestamp IS NOT NULL
)
SELECT k.customer_key, ts, kind, score,
  CASE WHEN score IS NOT NULL THEN lag(score) OVER answers END AS prev,
  CASE WHEN score IS NOT NULL THEN row_number() OVER answers END AS rn
FROM sv JOIN customers_known k USING (customer_id)
WINDOW answers AS (PARTITION BY k.customer_key, kind, score IS NOT NULL ORDER BY ts, score)
ORDER BY k.customer_key
"""
    ]


def _aggregates(ctx: FamilyContext, t: int) -> list[tuple[str, str]]:
    cols = []
    for kind in KINDS:
        scored = f"kind = '{kind}' AND score IS NOT NULL"
        cols += [
            f"arg_max(score, rn) FILTER (WHERE {scored}) AS v_{kind}",
            f"arg_max(prev, rn) FILTER (WHERE {scored} AND prev IS NOT NULL) AS v_{kind}_prev",
        ]
    cols += ["max(ts) AS v_last", f"count(*) FILTER (WHERE ts >= {ago(t, 365)}) AS v_n_365"]
    body = ",\n    ".join(cols)
    return [
        ("voice_agg", f"SELECT customer_key,\n    {body}\n  FROM voice WHERE ts < {t} GROUP BY customer_key")
    ]


def _features(ctx: FamilyContext) -> list[FeatureDef]:
    needs = (f"{SOURCE}.kind", f"{SOURCE}.score")
    feats: list[FeatureDef] = []
    for kind in KINDS:
        feats += [
            FeatureDef(f"voice_last_{kind}", f"last {kind.upper()} score before t", f"v_{kind}", needs=needs),
            FeatureDef(
                f"voice_{kind}_change",
                f"last {kind.upper()} score minus the one before it",
                f"v_{kind} - v_{kind}_prev",
                needs=needs,
            ),
        ]
    feats += [
        FeatureDef(
            "voice_nps_category",
            "band of the last NPS: detractor (0-6), passive (7-8), promoter (9-10)",
            "CASE WHEN v_nps IS NULL THEN NULL WHEN v_nps <= 6 THEN 'detractor' "
            "WHEN v_nps <= 8 THEN 'passive' ELSE 'promoter' END",
            needs=needs,
            dtype="string",
        ),
        FeatureDef(
            "days_since_last_survey", "days from the last survey answer to t", f"({{t}} - v_last) / {DAY_US}"
        ),
        FeatureDef("voice_surveys_365d", "survey answers in the 365 days before t", "coalesce(v_n_365, 0)"),
    ]
    return feats


FAMILY = Family(
    name="voice",
    sources=(SOURCE,),
    available=lambda ctx: ctx.present(SOURCE),
    stage=_stage,
    aggregates=_aggregates,
    features=_features,
)
