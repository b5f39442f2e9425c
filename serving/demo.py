"""``cxpredict demo``: the whole main job on the embedded defaults, as a sequence of steps.

:func:`run_demo` does the work and yields each step's results as ``(title, kind, payload)``; the
command line renders them (``kind`` names the renderer) and keeps serving at the end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import httpx
import pandas as pd

from cxpredict import tasks as registry
from cxpredict.progress import Progress
from cxpredict.workspace import Workspace
from serving.supervisor import Server, ensure_port_free, first_key, serve_environment

Step = tuple[str, str, object]
NEW_CUSTOMER = "NEW-CUSTOMER-1"


def run_demo(
    ws: Workspace, customers: int, seed: int, today: datetime, progress: Progress, port: int | None
) -> Iterator[Step]:
    """Generate, ingest, features, train, promote, score and (when ``port``) serve."""
    from features.ingest import ingest
    from features.store import refresh_features
    from features.synthetic import WorldConfig, generate
    from training.run import train_workspace
    from training.scoring import score_workspace

    if port is not None:
        ensure_port_free("127.0.0.1", port)  # before minutes of work, not after them
    world = generate(ws, WorldConfig(customers=customers, seed=seed, end=today.date()), progress)
    yield "1 · generate a synthetic omnichannel retailer", "generated", world
    yield (
        "2 · ingest: validate, quarantine, de-duplicate, stitch identities, unify profiles",
        "ingest",
        ingest(ws, progress=progress),
    )
    yield (
        "3 · behavioural features in Feast (offline snapshots, online store)",
        "features",
        refresh_features(ws, today, progress),
    )
    results = train_workspace(ws, as_of=today, progress=progress)
    yield "4 · train every task (MLflow runs, registered models)", "trained", list(results.values())
    yield (
        "5 · promote: challenger → champion only through the gate",
        "promoted",
        list(promote_pending(ws, results)),
    )
    alias = _served_alias(ws, results)
    out = ws.reports_dir / f"scores-{today:%Y-%m-%d}.parquet"
    yield (
        "6 · score every known customer",
        "scored",
        (alias, score_workspace(ws, today, out, alias, progress=progress)),
    )
    if port is not None:
        yield "7 · serve the prediction API (BentoML)", "serving", start_demo_server(ws, port, out, alias)


def promote_pending(ws: Workspace, results: dict) -> Iterator[object]:
    """Versions that training did not make champion (a champion already existed) go through the gate."""
    from training.commands import promote_command, workspace_evaluation_sets

    pending = [task for task, result in results.items() if result.status == "trained" and not result.champion]
    evaluation = workspace_evaluation_sets(ws) if pending else None
    for task, result in results.items():
        if result.champion:
            yield f"{result.model_name} version {result.model_version}: champion ({result.decision})"
        elif task in pending:
            yield promote_command(ws, task, version=result.model_version, evaluation_set=evaluation)


def _served_alias(ws: Workspace, results: dict) -> str:
    """``champion`` when every trained task has one, else ``challenger`` (the versions just trained)."""
    from training.tracking import resolve_tracking, version_info

    target = resolve_tracking(ws)
    return "champion" if all(version_info(target, task) for task in results) else "challenger"


def start_demo_server(ws: Workspace, port: int, scores_path, alias: str) -> dict[str, object]:
    """Start the API, ask it about a mid-risk customer and a new one; the caller waits on ``server``."""
    env = serve_environment(ws, alias, 30.0)
    server = Server(ws, env, port)
    answered = server.wait_answering()
    found = {"server": server, "answered": answered, "key_file": env.get("CXPREDICT_API_KEYS_FILE")}
    if not answered:
        return found
    ready = httpx.get(f"{server.url}/readyz", timeout=5).json()
    first = registry.all_tasks()[0]
    column = f"{first.name}_probability"
    scores = pd.read_parquet(scores_path, columns=["customer_id", column]).dropna()
    sample = scores.iloc[(scores[column] - 0.65).abs().argsort()[:1]]["customer_id"].tolist()
    body = {"customer_ids": [*sample, NEW_CUSTOMER]}
    headers = {"Authorization": f"Bearer {first_key(env)}"}
    answer = httpx.post(f"{server.url}/predict", json=body, headers=headers, timeout=30)
    risky = scores.sort_values(column, ascending=False)["customer_id"].head(20).tolist()
    decide = {"customer_ids": risky, "context": {"channel": "web", "moment": "session"}, "max_actions": 2}
    decided = httpx.post(f"{server.url}/decide", json=decide, headers=headers, timeout=30)
    shown = decided.text
    if decided.status_code == 200:  # show one decision, preferably one with actions
        body = decided.json()
        picked = next((d for d in body["decisions"] if d["actions"]), body["decisions"][0])
        shown = json.dumps(body | {"decisions": [picked]})
    return found | {
        "ready": ready,
        "request": json.dumps(body),
        "status": answer.status_code,
        "answer": answer.text,
        "decide_request": f"{{customer_ids: the 20 highest {first.name} risks, ...}}",
        "decide_status": decided.status_code,
        "decide_answer": shown,
    }
