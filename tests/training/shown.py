"""The registry jobs as the command line shows them: each calls the job, renders the result into a
console when one is given (as ``cxpredict promote | rollback | models`` do) and returns it."""

from __future__ import annotations

from cxpredict import render
from training import commands
from training.promotion import GateConfig


def promote_command(ws, task, *, console=None, ece_bound=None, tolerance=None, **options):
    limits = {"ece_bound": ece_bound, "auc_tolerance": tolerance}
    gate = GateConfig(**{name: value for name, value in limits.items() if value is not None})
    result = commands.promote_command(ws, task, gate=gate, **options)
    if console is not None:
        console.print(render.decided(result))
    return result


def rollback_command(ws, task, *, console=None, **options):
    result = commands.rollback_command(ws, task, **options)
    if console is not None:
        console.print(render.decided(result))
    return result


def models_command(ws, history=False, console=None, as_json=False):
    data = commands.models_command(ws, history=history)
    if console is not None and not as_json:
        console.print(render.models(data, history))
    return data


card_command = commands.card_command
