"""Profile family (sources: customers, consents): tenure, age, region, channel, tier, consent state.

Computed from the canonical tables directly (no dependency on a unified-profile file). Tenure runs
from the time the customer was first known (signup or first fact, whichever is earlier). Region,
acquisition channel and loyalty tier are current attributes without history, so they are taken as
they are now. Consent state at t is the latest consent record before t for the purpose
(1 granted, 0 withdrawn, null never asked); of records at the same time, a grant wins (ties are
ordered, so every engine agrees).
"""

from __future__ import annotations

from features.families import DAY_US, Family, FamilyContext, FeatureDef

SOURCES = ("customers", "consents")
ATTRIBUTES = ("region", "acquisition_channel", "loyalty_tier")
PURPOSES = ("profiling", "marketing")


def _stage(ctx: FamilyContext) -> list[str]:
    statements = []
    if ctx.present("customers"):
        attrs = "".join(f", any_value({a}) AS {a}" for a in ATTRIBUTES)
        statements.append(
            "CREATE TABLE prof AS SELECT k.customer_key, any_value(birth_year)::DOUBLE AS birth_year"
            f"{attrs} FROM raw_customers JOIN customers_known k USING (customer_id) GROUP BY k.customer_key"
        )
    if ctx.present("consents"):
        statements.append(
            "CREATE TABLE cons AS SELECT k.customer_key, epoch_us(timestamp) AS ts, lower(purpose) AS purpose, granted "
            "FROM raw_consents JOIN customers_known k USING (customer_id) "
            "WHERE timestamp IS NOT NULL AND granted IS NOT NULL"
        )
    return statements


def _aggregates(ctx: FamilyContext, t: int) -> list[tuple[str, str]]:
    out = []
    if ctx.present("customers"):
        out.append(("prof_agg", "SELECT * FROM prof"))
    if ctx.present("consents"):
        cols = ", ".join(
            f"arg_max(granted, {{'ts': ts, 'granted': granted}}) FILTER (WHERE purpose = '{p}') AS c_{p}"
            for p in PURPOSES
        )
        out.append(
            ("cons_agg", f"SELECT customer_key, {cols} FROM cons WHERE ts < {t} GROUP BY customer_key")
        )
    return out


def _features(ctx: FamilyContext) -> list[FeatureDef]:
    feats = [
        FeatureDef(
            "profile_tenure_days",
            "days from when the customer was first known to t",
            f"({{t}} - known_us) / {DAY_US}",
        ),
        FeatureDef(
            "profile_age",
            "age in years at t (year of t minus birth year)",
            "extract(year FROM make_timestamp({t})) - birth_year",
            needs=("customers.birth_year",),
        ),
    ]
    feats += [
        FeatureDef(
            f"profile_{a}",
            f"{a.replace('_', ' ')} (current value)",
            a,
            needs=(f"customers.{a}",),
            dtype="string",
        )
        for a in ATTRIBUTES
    ]
    feats += [
        FeatureDef(
            f"profile_consent_{p}",
            f"{p} consent at t: 1 granted, 0 withdrawn, null never recorded",
            f"c_{p}",
            needs=("consents.purpose", "consents.granted"),
        )
        for p in PURPOSES
    ]
    return feats


FAMILY = Family(
    name="profile",
    sources=SOURCES,
    available=lambda ctx: any(ctx.present(s) for s in SOURCES),
    stage=_stage,
    aggregates=_aggregates,
    features=_features,
)
