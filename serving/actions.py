"""The action catalogue: what the decision service may propose, to whom, on which channel, how often.

Why configuration and not code: the actions, their costs and their rules belong to the business that
runs the journeys, and change more often than the models. ``<workspace>/actions.yaml`` overrides the
documented default shipped beside this module (``actions.default.yaml``). A catalogue is validated
whole when it is loaded; an invalid one is refused with the line and the field at fault, so a typo
never becomes a silent "no action".

Eligibility rules are plain comparisons, ``"<value> <op> <number>"``, where ``<value>`` is a model
output (``<task>.probability``; for a ranked block, ``<task>.<item>`` and ``<task>.top``) or a
feature of the customer's feature vector; every rule of an action must hold. A value the customer does not
have (unknown feature, no model) makes the rule fail, never pass.
"""

from __future__ import annotations

import operator
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cxpredict.workspace import Workspace

DEFAULT_CATALOGUE = Path(__file__).with_name("actions.default.yaml")
CATALOGUE_FILE = "actions.yaml"
CHANNELS = ("email", "sms", "push", "phone", "web", "app", "store")
MARKETING_CHANNELS = frozenset({"email", "sms", "push"})
_OPS = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_RULE = re.compile(r"^\s*([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)?)\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")


class Rule(BaseModel):
    """One comparison of a model output or a feature with a number."""

    model_config = ConfigDict(frozen=True)

    value: str
    op: str
    threshold: float

    @classmethod
    def parse(cls, text: str) -> Rule:
        match = _RULE.match(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not a rule: write '<output or feature> <op> <number>', e.g. '<task>.probability >= 0.3'"
            )
        return cls(value=match.group(1), op=match.group(2), threshold=float(match.group(3)))

    def holds(self, value: float | None) -> bool:
        return value is not None and value == value and _OPS[self.op](float(value), self.threshold)

    def __str__(self) -> str:
        return f"{self.value} {self.op} {self.threshold:g}"


class Action(BaseModel):
    """One action of the catalogue."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: Literal["retention", "service", "cross_sell", "win_back", "none"]
    description: str = ""
    channels: tuple[Literal[CHANNELS], ...] = ()  # type: ignore[valid-type]
    cost: float = Field(default=0.0, ge=0)
    cooldown_days: int = Field(default=0, ge=0)
    consent: Literal["profiling", "marketing"] = "profiling"
    eligible: tuple[Rule, ...] = ()
    success_value: float = Field(
        default=0.0, ge=0, description="Value of a success, until a value model exists."
    )
    value: str | None = Field(
        default=None,
        description="The output a success is worth (e.g. value.value_at_risk); success_value when the "
        "customer has no such output (no value model).",
    )
    prior_uplift: float = Field(default=0.0, ge=0, le=1, description="Uplift per unit of the driving output.")
    driver: str | None = Field(default=None, description="The output the prior uplift scales with.")
    uplift: str | None = Field(
        default=None,
        description="The model output that estimates this action's uplift (e.g. "
        "uplift.expected_uplift.retention_offer): used instead of the prior when the customer has it.",
    )

    @field_validator("eligible", mode="before")
    @classmethod
    def _rules(cls, value):
        return tuple(Rule.parse(item) if isinstance(item, str) else item for item in value or ())

    @model_validator(mode="after")
    def _consistent(self) -> Action:
        if self.kind == "none":
            if self.channels or self.cost:
                raise ValueError("the 'none' action has no channel and no cost")
            return self
        if not self.channels:
            raise ValueError("an action needs at least one channel")
        if self.consent == "profiling" and MARKETING_CHANNELS & set(self.channels):
            raise ValueError(
                f"channels {sorted(MARKETING_CHANNELS & set(self.channels))} are marketing contacts: "
                "set consent: marketing"
            )
        return self


class ContactPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_contacts: int = Field(default=2, ge=0)
    window_days: int = Field(default=7, ge=1)


class Catalogue(BaseModel):
    """The validated catalogue: actions (names unique, exactly one of kind ``none``) and the policies."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    holdout_share: float = Field(default=0.05, ge=0, lt=1)
    exploration_share: float = Field(default=0.05, ge=0, lt=1)
    contact_policy: ContactPolicy = ContactPolicy()
    actions: tuple[Action, ...]

    @model_validator(mode="after")
    def _unique(self) -> Catalogue:
        names = [action.name for action in self.actions]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"action names must be unique: {', '.join(repeated)}")
        if sum(action.kind == "none" for action in self.actions) != 1:
            raise ValueError("the catalogue needs exactly one action of kind 'none' (what a holdout gets)")
        return self

    def action(self, name: str) -> Action:
        return next(a for a in self.actions if a.name == name)


class CatalogueError(ValueError):
    """A catalogue that cannot be used; the message names the file, the line and the field."""


def _line_of(node: yaml.Node, location: tuple) -> int | None:
    """The 1-based line of the YAML node at a pydantic error location (the deepest one found)."""
    line = node.start_mark.line + 1
    for key in location:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            found = node.value[key]
        else:
            found = None
        if found is None:
            break
        node, line = found, found.start_mark.line + 1
    return line


def parse_catalogue(text: str, source: str = CATALOGUE_FILE) -> Catalogue:
    """Validate a catalogue's YAML text; raises :class:`CatalogueError` naming the line and field."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise CatalogueError(
            f"{source}{where}: not valid YAML ({getattr(error, 'problem', error)})"
        ) from None
    if not isinstance(data, dict) or node is None:
        raise CatalogueError(f"{source}: a catalogue is a mapping with an 'actions' list")
    try:
        return Catalogue.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        location = tuple(first["loc"])
        field = ".".join(str(part) for part in location) or "catalogue"
        raise CatalogueError(f"{source} line {_line_of(node, location)}: {field}: {first['msg']}") from None


def load_catalogue(ws: Workspace) -> Catalogue:
    """The workspace's ``actions.yaml``, else the shipped default."""
    path = ws.root / CATALOGUE_FILE
    chosen = path if path.is_file() else DEFAULT_CATALOGUE
    return parse_catalogue(chosen.read_text(encoding="utf-8"), str(chosen))
