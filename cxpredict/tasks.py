"""The task registry: one frozen spec per prediction task, the only place that lists the tasks.

A task is everything that differs between models: its names (code, command line, MLflow model and
experiment, Feast feature service), the feature families it reads, its default label horizon, what
its label means, the metric the promotion gate compares, and its *implementation* — the module
that builds its labels, fits its candidates, names its oracle and shapes its API block (see
``training.tasks`` for the protocol). Every other module asks this registry; none names a task.

This module sits on the ground floor: it imports nothing from ``features``, ``training`` or
``serving``. Implementations are imported by dotted name only when a layer asks for one, so the
feature layer can read the declarative part without pulling in training.

Adding a task: one implementation module plus one :func:`register` call (for a package outside
this repository, an entry point in the group ``cxpredict.tasks`` whose object is a ``TaskSpec``).
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType

ENTRY_POINT_GROUP = "cxpredict.tasks"
OPT_IN_ENV = "CXPREDICT_TASKS_OPT_IN"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class UnknownTask(ValueError):
    """A task name the registry does not hold."""


@dataclass(frozen=True)
class TaskSpec:
    """Everything that differs between two tasks, declared once."""

    name: str
    """Code name: Feast feature service, MLflow tags, API block and score-column prefix."""
    families: tuple[str, ...]
    """Feature families of the task's Feast FeatureService (families a workspace lacks are left out)."""
    horizon_days: int
    label_definition: str
    implementation: str
    """Dotted module name implementing ``training.tasks.TaskImplementation``."""
    summary: str
    """One line: what the task answers (API docs, ``--help``)."""
    purpose: str = ""
    intended_use: str = ""
    limitations: tuple[str, ...] = ()
    gate_metric: str = "auc"
    required_for_scoring: bool = False
    """``score`` refuses to run without this task's model (the columns downstream tools expect)."""
    opt_in: bool = False
    """Left out of every "all tasks" (``train all``, ``score``, the API) unless named in
    ``CXPREDICT_TASKS_OPT_IN`` (comma-separated); always reachable by name (``train <task>``). For
    tasks that need data most workspaces lack (uplift needs a decision log with a control group)."""
    reads_decision_log: bool = False
    """The task learns from the decision log's treatments besides the canonical tables. Only such a
    task's data hash covers the log, so logging decisions does not make every model look stale."""
    tags: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"task name {self.name!r} must be snake_case")
        if not 1 <= self.horizon_days <= 730:
            raise ValueError(f"task {self.name}: horizon_days must be within 1..730")
        if not self.families:
            raise ValueError(f"task {self.name}: name at least one feature family")

    @property
    def cli_name(self) -> str:
        return self.name.replace("_", "-")

    @property
    def model_name(self) -> str:
        """Registered MLflow model (and experiment) name: ``cx-<cli name>``."""
        return f"cx-{self.cli_name}"

    @property
    def experiment(self) -> str:
        return self.model_name

    @property
    def feature_service(self) -> str:
        return self.name

    def module(self) -> ModuleType:
        """The implementation module, imported on first use."""
        return importlib.import_module(self.implementation)


_BUILTIN = (
    TaskSpec(
        name="churn",
        families=("purchase", "engagement", "service", "voice", "marketing", "profile"),
        horizon_days=90,
        label_definition="known at t (first seen < t) and no purchase and no engagement event in (t, t+H]; "
        "transactions-only data: no purchase in (t, t+H]",
        implementation="training.tasks.churn",
        summary="Churn probability, risk band and drivers.",
        purpose="Estimates, for each known customer, the probability of no purchase and no engagement in "
        "the next H days, with a risk band and the features driving the score.",
        intended_use="Ranking customers for retention outreach and service prioritisation; monitoring churn "
        "risk by segment. Scores are probabilities: compare them, and use the risk bands, within one "
        "as-of date.",
        limitations=("On transactions-only data churn means 'no purchase' (engagement is not observed).",),
        required_for_scoring=True,
    ),
    TaskSpec(
        name="next_purchase",
        families=("purchase", "engagement", "marketing", "profile", "needs", "voice"),
        horizon_days=30,
        label_definition="purchase in (t, t+H]; days to the first purchase after t, censored at as_of; "
        "category of that purchase when within (t, t+H]",
        implementation="training.tasks.next_purchase",
        summary="Next purchase: probability within the horizon, expected days with an interval, categories.",
        purpose="Estimates the probability of a purchase in the next H days, the days until the next "
        "purchase with an interval, and the most likely categories of that purchase.",
        intended_use="Timing and targeting of offers and recommendations; demand planning by segment.",
        limitations=(
            "Days to the next purchase are learned from customers who bought within the follow-up window: "
            "they are optimistic for customers unlikely to buy; read them with the purchase probability.",
        ),
        required_for_scoring=True,
    ),
    TaskSpec(
        name="unmet_needs",
        families=("needs", "engagement", "service", "purchase", "profile"),
        horizon_days=30,
        label_definition="per category k: a search, product_view or wishlist_add event in k in (t, t+H] "
        "and no purchase in k in (t, t+H]",
        implementation="training.tasks.unmet_needs",
        summary="Unmet needs ranked by probability.",
        purpose="Estimates, per category, the probability that the customer shows demand (search, view, "
        "wishlist) in the next H days without buying in that category.",
        intended_use="Surfacing assortment gaps and follow-ups (availability alerts, assisted selling) per "
        "customer.",
        limitations=(
            "Needs with too few positives in training or validation have no model and are absent from the "
            "output.",
        ),
    ),
    TaskSpec(
        name="value",
        families=("purchase", "engagement", "marketing", "profile", "service"),
        horizon_days=90,
        label_definition="net spend (purchase amounts minus returned amounts) in (t, t+H] of a customer "
        "known at t",
        implementation="training.tasks.value",
        summary="Customer value: expected net spend in the horizon, its 10-90 % interval and the value at risk.",
        purpose="Estimates each known customer's net spend in the next H days with an interval, and the "
        "spend expected to be lost to the chance that they do not buy at all (value at risk).",
        intended_use="Weighing actions by what a customer is worth (next best action priorities), "
        "budgeting retention by value at risk, revenue forecasts by segment.",
        limitations=(
            "Spend is predicted for customers already known; acquisition is not modelled.",
            "Returns after the horizon of the purchase they undo are counted in the horizon they fall in.",
        ),
        gate_metric="gini",
    ),
    TaskSpec(
        name="uplift",
        families=("purchase", "engagement", "service", "voice", "marketing", "profile", "needs"),
        horizon_days=28,
        label_definition="per logged decision (the customer's first in the month after cutoff t): a "
        "purchase in (decision, decision+H], with the decision's arm (first action given, or control for "
        "a holdout decision) and propensity",
        implementation="training.tasks.uplift",
        summary="Uplift per action: the change in the chance of a purchase within the horizon if the action "
        "is taken rather than none.",
        purpose="Estimates, per customer and action of the catalogue, how much the action raises (or lowers) "
        "the probability of a purchase in the next H days, learned from logged decisions and their control "
        "group.",
        intended_use="Choosing who gets which action (next best action priorities): target the customers an "
        "action changes, not the sure things or the lost causes.",
        limitations=(
            "Learned only for actions the decision log holds with a control group; actions never tried have "
            "no estimate.",
            "A decision's arm is its first action; later actions of the same decision are not separated.",
        ),
        gate_metric="qini",
        opt_in=True,
        reads_decision_log=True,
    ),
)

_registry: dict[str, TaskSpec] = {}


def _load() -> dict[str, TaskSpec]:
    if not _registry:
        for spec in _BUILTIN:
            _registry[spec.name] = spec
        for point in entry_points(group=ENTRY_POINT_GROUP):
            spec = point.load()
            _registry.setdefault(spec.name, spec)
    return _registry


def register(spec: TaskSpec) -> TaskSpec:
    """Add (or replace, by name) a task. Returns the spec, so a module can write
    ``SPEC = register(TaskSpec(...))``."""
    _load()[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _load().pop(name, None)


def enabled_opt_in() -> frozenset[str]:
    """Opt-in tasks enabled by ``CXPREDICT_TASKS_OPT_IN`` (read when asked)."""
    return frozenset(name.strip() for name in os.environ.get(OPT_IN_ENV, "").split(",") if name.strip())


def all_tasks() -> tuple[TaskSpec, ...]:
    """Every registered task in use, built-ins first, in registration order: opt-in tasks only when
    enabled (:data:`OPT_IN_ENV`)."""
    enabled = enabled_opt_in()
    return tuple(spec for spec in _load().values() if not spec.opt_in or spec.name in enabled)


def known_tasks() -> tuple[TaskSpec, ...]:
    """Every registered task, opt-in ones included (what a command accepts by name)."""
    return tuple(_load().values())


def names() -> tuple[str, ...]:
    return tuple(spec.name for spec in all_tasks())


def get(name: str) -> TaskSpec:
    """The spec of ``name``; command-line spelling (``next-purchase``) is accepted too."""
    key = name.strip().lower().replace("-", "_")
    found = _load().get(key)
    if found is None:
        raise UnknownTask(
            f"unknown task {name!r}: choose {', '.join(spec.cli_name for spec in known_tasks())}"
        )
    return found


def parse(name: str) -> tuple[TaskSpec, ...]:
    """A command-line task argument: one task name, or ``all``."""
    if name.strip().lower() == "all":
        return all_tasks()
    return (get(name),)


def by_model_name(model_name: str) -> TaskSpec:
    for spec in known_tasks():
        if spec.model_name == model_name:
            return spec
    raise UnknownTask(f"no task registers the model {model_name!r}")
