"""Benchmark ``cxpredict monitor`` (target: 100,000 customers <= 60 s): feature drift of every
champion against its training reference, prediction drift and realised performance.

    .venv/bin/python benchmarks/monitor.py                          # 100k world under /tmp, reused
    .venv/bin/python benchmarks/monitor.py --customers 20000        # a smaller world

Phases run as child processes (each peak RSS its own): ``prepare`` (generate, ingest, features;
skipped when the workspace has features), ``train`` (every task, skipped when champions exist),
``score`` (as of 2026-08-01, whose horizons have passed, and 2026-11-01: the outputs monitor reads)
and ``monitor`` (``training.monitor.monitor_workspace`` as the command runs it, MLflow run
included), timed. Prints JSON and rewrites the ``<!-- monitor -->`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import cpu_seconds, generated_world, machine, peak_rss_mib, run_phase, write_section  # noqa: E402

OPEN, CLOSE = "<!-- monitor -->", "<!-- /monitor -->"
END = date(2026, 11, 1)
AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
SCORED = (datetime(2026, 8, 1, tzinfo=UTC), AS_OF)
TARGET_S = 60.0


def _usage() -> dict[str, float]:
    return {"cpu_seconds": cpu_seconds(), "peak_rss_mib": peak_rss_mib()}


def phase_prepare(workspace: Path, customers: int) -> dict:
    began = time.perf_counter()
    generated_world(workspace, customers, END, AS_OF)
    return {"seconds": round(time.perf_counter() - began, 1), **_usage()}


def phase_train(workspace: Path) -> dict:
    from cxpredict.workspace import resolve_workspace
    from training.run import train_workspace

    began = time.perf_counter()
    results = train_workspace(resolve_workspace(workspace), as_of=AS_OF)
    return {
        "seconds": round(time.perf_counter() - began, 1),
        "tasks": {t: r.status for t, r in results.items()},
    }


def phase_score(workspace: Path) -> dict:
    from cxpredict.workspace import resolve_workspace
    from training.scoring import score_workspace

    ws = resolve_workspace(workspace)
    seconds = {}
    for moment in SCORED:
        began = time.perf_counter()
        score_workspace(ws, moment, ws.root / f"bench-scores-{moment.date()}.parquet")
        seconds[str(moment.date())] = round(time.perf_counter() - began, 1)
    return {"seconds": seconds}


def phase_monitor(workspace: Path) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    from cxpredict.workspace import resolve_workspace
    from training.monitor import monitor_workspace

    imported = time.perf_counter() - began
    result = monitor_workspace(resolve_workspace(workspace), AS_OF)
    seconds = time.perf_counter() - began
    document = result.to_dict()
    return {
        "seconds": round(seconds, 1),
        "import_seconds": round(imported, 1),
        "status": document["status"],
        "current_rows": document["current_rows"],
        "tasks": {
            t["task"]: {
                "features": t["feature_drift"]["tested"],
                "drifted": len(t["feature_drift"]["drifted"]),
                "reference_rows": t["feature_drift"]["reference_rows"],
            }
            for t in document["tasks"]
        },
        "realised": {task: len(rows) for task, rows in document["performance"].items()},
        "html_mib": round(result.html_path.stat().st_size / 2**20, 1),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        **_usage(),
    }


def render(result: dict) -> str:
    m, run = result["machine"], result["monitor"]
    verdict = "meets" if run["seconds"] <= TARGET_S else "misses"
    lines = [
        OPEN,
        "## Monitor",
        "",
        f"`{result['command']}` on a generated world of {result['customers']:,} customers (730 days to "
        f"{END}); monitor as of {AS_OF.date()} after `score` as of {SCORED[0].date()} and {SCORED[1].date()}.",
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory']}, Python {m['python']}; load average "
        f"{run['load_before']} before, {run['load_after']} after (the machine is shared).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| `monitor` wall time (imports included) | **{run['seconds']} s** ({verdict} the {TARGET_S:.0f} s target"
        + (" measured at this size" if result["customers"] != 100_000 else "")
        + ") |",
        f"| of which importing `training.monitor` (Evidently loads later, when first used) | {run['import_seconds']} s |",
        f"| CPU time / peak RSS | {run['cpu_seconds']} s / {run['peak_rss_mib']} MiB |",
        f"| current customers compared | {run['current_rows']:,} |",
        f"| HTML report | {run['html_mib']} MiB |",
        f"| status | {run['status']} |",
        "",
        "| task | features tested | drifted | reference rows | realised score outputs |",
        "|---|---|---|---|---|",
    ]
    for task, row in run["tasks"].items():
        lines.append(f"| {task} | {row['features']} | {row['drifted']} | {row['reference_rows']:,} | "
                     f"{run['realised'].get(task, 0)} |")  # fmt: skip
    lines += ["", *(f"- {note}" for note in result.get("notes", [])), "", CLOSE]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--note", action="append", default=[])
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument(
        "--render", type=Path, default=None, help="rewrite the doc section from a saved result"
    )
    parser.add_argument("--phase", choices=["prepare", "train", "score", "monitor"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text().strip().splitlines()[-1])
        saved["notes"] = args.note or saved.get("notes", [])
        write_section(OPEN, CLOSE, render(saved))
        return
    workspace = args.workspace or Path(f"/tmp/cxpredict-bench-monitor/ws{args.customers}")
    if args.phase:
        handlers = {"prepare": lambda: phase_prepare(workspace, args.customers), "train": lambda: phase_train(workspace),
                    "score": lambda: phase_score(workspace), "monitor": lambda: phase_monitor(workspace)}  # fmt: skip
        print(json.dumps(handlers[args.phase]()))
        return
    command = " ".join(["benchmarks/monitor.py", *sys.argv[1:]])
    result: dict = {"machine": machine(), "customers": args.customers, "notes": args.note, "command": command}
    if not (workspace / "features" / "manifest.json").exists():
        result["prepare"] = run_phase(
            __file__, "--phase", "prepare", "--workspace", str(workspace), "--customers", str(args.customers)
        )
        print("prepared", result["prepare"], flush=True)
    if not (workspace / "mlflow" / "mlflow.db").exists():
        result["train"] = run_phase(__file__, "--phase", "train", "--workspace", str(workspace))
        print("trained", result["train"], flush=True)
    if not (workspace / "reports" / "scores" / f"scores-{SCORED[0].date()}.json").exists():
        result["score"] = run_phase(__file__, "--phase", "score", "--workspace", str(workspace))
        print("scored", result["score"], flush=True)
    result["monitor"] = run_phase(__file__, "--phase", "monitor", "--workspace", str(workspace))
    print(json.dumps(result), flush=True)
    if not args.no_doc:
        write_section(OPEN, CLOSE, render(result))


if __name__ == "__main__":
    main()
