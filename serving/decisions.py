"""Next best action for one customer: eligibility, consent, caps, holdout, exploration, priority.

A pure function of the customer's model outputs and features, the catalogue, the customer's past
contacts and a seed, so a decision can be replayed and tested without a server. The rules, in the
order applied:

1. No profiling consent: no decision at all (nothing is ranked or logged for them).
2. Global holdout: a stable hash of the customer id puts ``holdout_share`` of customers in a control
   group that gets no action, whatever the request; their decisions are still logged, with the
   actions the policy would have chosen (``withheld``), for impact per action.
3. Per action: marketing consent for marketing actions (``no_marketing_consent``), every eligibility
   rule (``not_eligible: <rule>``), the cooldown since the same action (``cooldown_<n>d``), and a
   priority above zero (``priority_not_positive``).
4. Contact cap across actions: at most ``max_contacts`` in ``window_days`` (``contact_cap_<n>d``).
5. Ranking, slot by slot: with probability ``exploration_share`` a uniform pick among the actions
   left, else the highest priority; each chosen action carries the probability the policy had of
   choosing it in its slot (``propensity``), so the propensities of one slot sum to 1 over the
   actions left and policies can be evaluated off-policy later.

Priority: expected uplift = the action's ``uplift`` output (the uplift model's estimate for this
customer) when there is one, else the documented prior ``prior_uplift`` × the action's driver
output (e.g. churn probability); each chosen action says which (``uplift_source``: ``model`` or
``prior``). Expected value = uplift × the action's ``value`` output (e.g. the value model's value
at risk) or, without one, its ``success_value``; priority = expected value − cost. The channel is the allowed, consented channel the customer
responds to most: email by their marketing open rate, push/app by their app share of sessions, web
by the rest, sms and phone at fixed low/neutral scores.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from features.decision_log import Contact
from serving.actions import MARKETING_CHANNELS, Action, Catalogue

SEND_WINDOWS = {"email": (0, 24), "sms": (0, 12), "push": (0, 2), "phone": (0, 48), "web": (0, 0),
                "app": (0, 0), "store": (0, 168)}  # fmt: skip
"""Hours from the decision within which to contact, per channel (web/app: in the current session)."""
_FIXED_CHANNEL_SCORE = {"sms": 0.05, "phone": 0.5, "store": 0.1}


@dataclass(frozen=True)
class CustomerView:
    """What a decision may look at: model outputs by dotted name and the feature vector."""

    customer_id: str
    outputs: Mapping[str, float | None]
    features: Mapping[str, float | str | None]
    top_need: str | None = None


@dataclass
class Decision:
    customer_id: str
    holdout: bool
    actions: list[dict] = field(default_factory=list)
    suppressed: list[dict] = field(default_factory=list)
    scored: bool = True
    reason: str | None = None
    withheld: list[dict] = field(default_factory=list)
    """Holdout only: the actions the policy would have chosen, logged (never answered) so that
    impact per action compares like with like: treated with an action vs held out from the same one."""


def in_holdout(customer_id: str, share: float, salt: str = "cxpredict-holdout") -> bool:
    """Stable across calls, restarts and machines: a hash of the id, not a random draw."""
    digest = hashlib.sha256(f"{salt}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def granted(value) -> bool:
    return value is not None and value == value and float(value) > 0


def _value(view: CustomerView, name: str) -> float | None:
    value = view.outputs.get(name) if "." in name else view.features.get(name)
    if value is None or isinstance(value, str) or value != value:
        return None
    return float(value)


def _channel_scores(view: CustomerView) -> dict[str, float]:
    """How much the customer responds on each channel (the same for every action)."""
    app_share = _value(view, "engagement_app_share_90d")
    opens = _value(view, "marketing_open_rate_90d")
    scores = {
        "email": 0.2 if opens is None else opens,
        "push": 0.0 if app_share is None else app_share,
        "app": 0.0 if app_share is None else app_share,
        "web": 0.0 if app_share is None else 1.0 - app_share,
    }
    return _FIXED_CHANNEL_SCORE | scores


def channel_for(
    action: Action,
    view: CustomerView,
    marketing: bool,
    prefer: str | None = None,
    scores: Mapping[str, float] | None = None,
) -> str | None:
    """The allowed channel the customer responds to most (marketing channels only with consent);
    ``prefer`` wins when it is allowed. ``scores``: :func:`_channel_scores` of ``view``, when the
    caller has them already."""
    scores = _channel_scores(view) if scores is None else scores
    allowed = [c for c in action.channels if marketing or c not in MARKETING_CHANNELS]
    if not allowed:
        return None
    if prefer in allowed:
        return prefer
    return max(allowed, key=lambda c: (scores.get(c, 0.0), -action.channels.index(c)))


def _worth(action: Action, view: CustomerView) -> float:
    """What a success of ``action`` is worth for this customer: its ``value`` output when the
    customer has one (the value model's), else the catalogue's ``success_value``."""
    amount = _value(view, action.value) if action.value else None
    return action.success_value if amount is None else amount


def _priced(action: Action, view: CustomerView) -> tuple[float, float, float, str]:
    """(expected uplift, expected value, priority, where the uplift came from: ``model`` when the
    action's ``uplift`` output is there for the customer, else ``prior``)."""
    learned = _value(view, action.uplift) if action.uplift else None
    if learned is not None:
        uplift, source = learned, "model"
    else:
        driver = _value(view, action.driver) if action.driver else 1.0
        uplift, source = action.prior_uplift * (driver or 0.0), "prior"
    worth = uplift * _worth(action, view)
    return uplift, worth, worth - action.cost, source


def _reasons(action: Action, view: CustomerView) -> list[str]:
    reasons = [
        f"{rule.value} {_value(view, rule.value):.3g} {rule.op} {rule.threshold:g}"
        for rule in action.eligible
    ]
    if action.value and _value(view, action.value) is not None:
        reasons.append(f"{action.value} {_value(view, action.value):.3g}")
    if action.kind == "cross_sell" and view.top_need:
        reasons.append(f"top unmet need: {view.top_need}")
    return reasons


def decide(
    view: CustomerView,
    catalogue: Catalogue,
    history: Sequence[Contact],
    now: datetime,
    *,
    max_actions: int = 3,
    seed: str,
    channel: str | None = None,
) -> Decision:
    """The decision for one customer (see the module docstring for the rules); ``channel``, where
    the customer is now, wins when the action allows it and consent permits."""
    if not granted(view.features.get("profile_consent_profiling", 1.0)):
        return Decision(view.customer_id, holdout=False, scored=False, reason="no profiling consent")
    if in_holdout(view.customer_id, catalogue.holdout_share):
        would = _arbitrate(view, catalogue, history, now, max_actions, seed, channel)
        return Decision(view.customer_id, holdout=True, withheld=would.actions)
    return _arbitrate(view, catalogue, history, now, max_actions, seed, channel)


def _arbitrate(
    view: CustomerView,
    catalogue: Catalogue,
    history: Sequence[Contact],
    now: datetime,
    max_actions: int,
    seed: str,
    channel: str | None,
) -> Decision:
    """Rules 3-5 of the module docstring for a consenting customer outside the holdout."""
    decision = Decision(view.customer_id, holdout=False)
    marketing = granted(view.features.get("profile_consent_marketing"))
    policy = catalogue.contact_policy
    recent = [c for c in history if now - c.at < timedelta(days=policy.window_days)]
    scores = _channel_scores(view)
    candidates: list[tuple[Action, float, float, float, str, str]] = []
    for action in catalogue.actions:
        if action.kind == "none":
            continue
        rule = None
        if action.consent == "marketing" and not marketing:
            rule = "no_marketing_consent"
        elif failed := next((r for r in action.eligible if not r.holds(_value(view, r.value))), None):
            rule = f"not_eligible: {failed}"
        elif any(
            c.action == action.name and now - c.at < timedelta(days=action.cooldown_days) for c in history
        ):
            rule = f"cooldown_{action.cooldown_days}d"
        chosen = channel_for(action, view, marketing, prefer=channel, scores=scores)
        uplift, worth, priority, source = _priced(action, view)
        if rule is None and chosen is None:
            rule = "no_consented_channel"
        if rule is None and priority <= 0:
            rule = "priority_not_positive"
        if rule is not None:
            decision.suppressed.append({"action": action.name, "rule": rule})
            continue
        candidates.append((action, uplift, worth, priority, chosen, source))
    room = max(0, policy.max_contacts - len(recent))
    slots = min(max_actions, room)
    rng = random.Random(seed)
    left = sorted(candidates, key=lambda c: (-c[3], c[0].name))
    for _ in range(min(slots, len(left))):
        explore = rng.random() < catalogue.exploration_share
        pick = rng.randrange(len(left)) if explore else 0
        share = catalogue.exploration_share / len(left)
        action, uplift, worth, priority, via, source = left.pop(pick)
        decision.actions.append(
            {
                "action": action.name,
                "channel": via,
                "send_within_hours": list(SEND_WINDOWS[via]),
                "priority": round(priority, 4),
                "expected_uplift": round(uplift, 6),
                "uplift_source": source,
                "expected_value": round(worth, 4),
                "propensity": round((1 - catalogue.exploration_share) * (pick == 0) + share, 6),
                "explored": explore,
                "reasons": _reasons(action, view),
            }
        )
    rule = f"contact_cap_{policy.window_days}d" if room <= max_actions else "max_actions"
    decision.suppressed += [{"action": action.name, "rule": rule} for action, *_ in left]
    return decision


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def view_from(prediction: Mapping, features: Mapping[str, Sequence], row: int | None) -> CustomerView:
    """A decision's view of one answered customer: each task block of the prediction as dotted
    outputs — ``<task>.<field>`` for every number of a block (``churn.probability``,
    ``value.value_at_risk``), ``<task>.<field>.<key>`` for a mapping of numbers
    (``uplift.expected_uplift.retention_offer``), and for a ranked list of
    scored items ``<task>.<item>`` per item and ``<task>.top`` for the best one (whose name becomes
    ``top_need``) — and their feature vector (``row`` of ``features``; None: unknown customer)."""
    outputs: dict[str, float | None] = {}
    top_name = None
    for task, block in prediction.items():
        if isinstance(block, Mapping) and any(
            _is_number(v) or isinstance(v, Mapping) for v in block.values()
        ):
            outputs |= {f"{task}.{key}": value for key, value in block.items() if _is_number(value)}
            outputs |= {
                f"{task}.{key}.{inner}": number
                for key, value in block.items()
                if isinstance(value, Mapping)
                for inner, number in value.items()
                if _is_number(number)
            }
        elif (
            isinstance(block, list) and block and isinstance(block[0], Mapping) and "probability" in block[0]
        ):
            name_key = next(key for key in block[0] if key != "probability")
            for item in block:
                outputs[f"{task}.{item[name_key]}"] = item["probability"]
            best = max(block, key=lambda item: item["probability"])
            outputs[f"{task}.top"], top_name = best["probability"], best[name_key]
    vector = {} if row is None else _Row(features, row)
    return CustomerView(prediction["customer_id"], outputs, vector, top_name)


class _Row(Mapping):
    """One customer's feature vector, read from the request's columns when asked: a decision looks
    at a handful of the hundreds of features, so none is copied."""

    __slots__ = ("_columns", "_row")

    def __init__(self, columns: Mapping[str, Sequence], row: int) -> None:
        self._columns, self._row = columns, row

    def __getitem__(self, name: str):
        return self._columns[name][self._row]

    def __iter__(self):
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


def as_answer(decision: Decision, decision_id: str | None) -> dict:
    """The per-customer body of ``/decide``."""
    return {
        "customer_id": decision.customer_id,
        "decision_id": decision_id,
        "scored": decision.scored,
        "reason": decision.reason,
        "holdout": decision.holdout,
        "actions": decision.actions,
        "suppressed": decision.suppressed,
    }


def cooldown_horizon(catalogue: Catalogue) -> timedelta:
    """How far back decisions matter for one customer: the longest cooldown or contact window."""
    longest = max([a.cooldown_days for a in catalogue.actions] + [catalogue.contact_policy.window_days])
    return timedelta(days=longest)
