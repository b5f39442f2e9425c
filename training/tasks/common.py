"""Pieces the task implementations share: the driver schema and rounding of API numbers."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Driver(BaseModel):
    feature: str
    value: float | str | None = Field(description="The feature's value as served (None: missing).")
    impact: float = Field(description="Contribution to the score in log-odds (positive raises it).")


def rounded(value: float, digits: int = 6) -> float:
    return round(float(value), digits)
