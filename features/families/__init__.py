"""Feature families: one module per family, each holding its SQL and its feature definitions.

A family turns canonical tables into one row per customer known at a cutoff ``t`` (epoch
microseconds, UTC). It works in two steps so that the expensive part runs once per build:

1. ``stage(ctx)`` — SQL statements that create compact staging tables sorted by customer key, from
   the ``raw_<source>`` views and the shared tables of ``features.families.base`` (once per build).
2. ``aggregates(ctx, t)`` — one ``SELECT customer_key, ... GROUP BY customer_key`` per staging table,
   run per snapshot, using only facts with time < t; every feature is then one SQL expression over
   those aggregate columns (``FeatureDef.sql``, where ``{t}`` stands for the cutoff).

A feature whose canonical input column was not supplied is left out (never zero-filled); a family
whose source is absent is not available at all. The orchestration lives in ``features.snapshots``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from features.contract import TIME_COLUMNS

DAY_US = 86_400_000_000
"""One day in microseconds: every time is handled as epoch microseconds (BIGINT) inside DuckDB."""

DEFINITIONS_VERSION = 1
"""Bump when a feature definition changes, so existing snapshots are rebuilt."""

SOURCE_TIME_COLUMN: Mapping[str, str] = TIME_COLUMNS
"""The column that says when a customer was first seen in each canonical source."""

Dtype = Literal["double", "string"]


@dataclass(frozen=True)
class FeatureDef:
    """One feature: its name, meaning, SQL expression over aggregate columns, and inputs.

    ``needs`` lists ``"source.column"`` references that must be supplied by the data; if any is
    not, the feature is left out of the family.
    """

    name: str
    description: str
    sql: str
    needs: tuple[str, ...] = ()
    dtype: Dtype = "double"


@dataclass(frozen=True)
class FamilyContext:
    """What the data supplies and how the build is parameterised.

    ``supplied`` maps each present canonical source to the columns actually supplied.
    ``boundaries_us`` are the cutoffs (and window starts) that do not fall on midnight: bucketed
    staging tables split their day buckets there, so a bucket is always wholly before or wholly
    after every cutoff and window edge of the build.
    """

    supplied: Mapping[str, frozenset[str]]
    windows: tuple[int, ...] = (7, 30, 90, 365)
    categories: tuple[str, ...] = ()
    boundaries_us: tuple[int, ...] = field(default=())

    def present(self, source: str) -> bool:
        return source in self.supplied

    def has(self, ref: str) -> bool:
        """Whether ``"source.column"`` is present and supplied."""
        source, column = ref.split(".", 1)
        return column in self.supplied.get(source, frozenset())

    def with_boundaries(self, boundaries_us: tuple[int, ...]) -> FamilyContext:
        return replace(self, boundaries_us=tuple(sorted(set(boundaries_us))))

    def bucket(self, ts: str) -> str:
        """SQL for the start of the bucket holding epoch-microsecond ``ts``: its UTC day, split at
        every non-midnight boundary of the build."""
        day = f"({ts} - ((({ts} % {DAY_US}) + {DAY_US}) % {DAY_US}))"
        splits = [f"CASE WHEN {ts} >= {b} THEN {b} END" for b in self.boundaries_us]
        return f"greatest({', '.join([day, *splits])})" if splits else day


Aggregate = tuple[str, str]
"""(name of the CTE, ``SELECT customer_key, ... FROM <staging table> WHERE time < t GROUP BY customer_key``)."""


@dataclass(frozen=True)
class Family:
    """A feature family; each module under ``features.families`` defines one as ``FAMILY``."""

    name: str
    sources: tuple[str, ...]
    available: Callable[[FamilyContext], bool]
    stage: Callable[[FamilyContext], list[str]]
    aggregates: Callable[[FamilyContext, int], list[Aggregate]]
    features: Callable[[FamilyContext], list[FeatureDef]]

    def active_features(self, ctx: FamilyContext) -> list[FeatureDef]:
        """The family's features whose inputs are all supplied, in definition order."""
        return [f for f in self.features(ctx) if all(ctx.has(ref) for ref in f.needs)]

    def used_sources(self, ctx: FamilyContext) -> list[str]:
        return [s for s in self.sources if ctx.present(s)]

    def snapshot_sql(self, ctx: FamilyContext, t_us: int) -> str:
        """One SELECT giving ``customer_id`` plus every active feature for customers known at t."""
        ctes = [
            (
                "known",
                f"SELECT customer_key, customer_id, known_us FROM customers_known WHERE known_us < {t_us}",
            )
        ]
        ctes += self.aggregates(ctx, t_us)
        with_sql = ",\n".join(f"{name} AS ({sql})" for name, sql in ctes)
        joins = " ".join(f"LEFT JOIN {name} USING (customer_key)" for name, _ in ctes[1:])
        columns = ",\n  ".join(
            f"CAST(({f.sql.replace('{t}', str(t_us))}) AS {'DOUBLE' if f.dtype == 'double' else 'VARCHAR'}) AS {f.name}"
            for f in self.active_features(ctx)
        )
        return f"WITH {with_sql}\nSELECT known.customer_id,\n  {columns}\nFROM known {joins}"


def sql_str(value: str) -> str:
    """A SQL string literal (categories are free text in real data)."""
    return "'" + value.replace("'", "''") + "'"


def slug(value: str) -> str:
    """snake_case token usable inside a feature name."""
    return re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_")


def ago(t_us: int, days: int) -> int:
    """The cutoff minus ``days`` whole days, in epoch microseconds."""
    return t_us - days * DAY_US


def all_families() -> tuple[Family, ...]:
    """Every family, in manifest order."""
    from features.families import engagement, marketing, needs, profile, purchase, service, voice

    return tuple(m.FAMILY for m in (purchase, engagement, service, voice, marketing, profile, needs))


__all__ = [
    "DAY_US",
    "DEFINITIONS_VERSION",
    "Aggregate",
    "Family",
    "FamilyContext",
    "FeatureDef",
    "SOURCE_TIME_COLUMN",
    "ago",
    "all_families",
    "slug",
    "sql_str",
]
