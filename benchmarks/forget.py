"""Benchmark the right to erasure: ``forget`` of 1,000 customers on a featurised, materialised workspace
(target: on 100,000 customers <= 60 s).

    .venv/bin/python benchmarks/forget.py                          # 20,000 customers under /tmp, reused
    .venv/bin/python benchmarks/forget.py --customers 100000       # the target's size

Phases run as child processes (each peak RSS its own): ``prepare`` builds the world once (generate,
ingest, features, Feast apply, materialise online, one logged event and one logged decision for
5,000 customers, and a score-like export of the latest purchase snapshot in ``reports/``), and is
skipped when the pristine workspace exists; ``forget`` copies it and runs
``features.erasure.forget`` for 1,000 customers (one request, by customer id), timing every place.
Prints JSON and rewrites the ``<!-- forget -->`` section of docs/benchmarks.md (other sections kept).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import generated_world, machine, peak_rss_mib, run_phase, write_section  # noqa: E402

OPEN, CLOSE = "<!-- forget -->", "<!-- /forget -->"
END = date(2026, 11, 1)
AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
TARGET_S = 60.0
LOGGED = 5_000


def phase_prepare(workspace: Path, customers: int) -> dict:
    import pandas as pd

    from features import catalog
    from features.event_log import EventLog, RealtimeEvent
    from features.store import materialize_latest
    from features.decision_log import DecisionLog

    ws, marks = generated_world(workspace, customers, END, AS_OF)
    began = time.perf_counter()
    materialize_latest(ws, end=AS_OF)
    marks["materialize_s"] = round(time.perf_counter() - began, 1)
    ids = sorted(catalog.read_profile(ws)["customer_id"])[::2][:LOGGED]
    log = EventLog.of(ws)
    for customer in ids:
        log.append(RealtimeEvent(customer_id=customer, event_type="search", timestamp=AS_OF))
    log.close()
    decisions = DecisionLog.of(ws)
    decisions.record_decisions([{"decision_id": f"d-{i}", "customer_id": c, "at": AS_OF, "holdout": False,
                                 "actions": [{"action": "retention_offer"}], "models": {}}
                                for i, c in enumerate(ids)])  # fmt: skip
    decisions.close()
    latest = max(ws.features_dir.glob("purchase/snapshot_date=*/data.parquet"))
    ws.reports_dir.mkdir(parents=True, exist_ok=True)
    pd.read_parquet(latest).to_parquet(ws.reports_dir / "export.parquet", index=False)
    return {**marks, "peak_rss_mib": peak_rss_mib()}


def phase_forget(pristine: Path, workspace: Path, forgotten: int) -> dict:
    from cxpredict.workspace import resolve_workspace
    from features import catalog, erasure

    shutil.rmtree(workspace, ignore_errors=True)
    subprocess.run(["cp", "-a", str(pristine), str(workspace)], check=True)
    ws = resolve_workspace(workspace)
    profile = sorted(catalog.read_profile(ws)["customer_id"])
    step = max(1, len(profile) // forgotten)
    ids = profile[step // 2 :: step][:forgotten]
    places: dict[str, float] = {}
    for name, eraser in list(erasure.ERASERS.items()):

        def timed(ctx, eraser=eraser, name=name):
            began = time.perf_counter()
            try:
                return eraser(ctx)
            finally:
                places[name] = round(time.perf_counter() - began, 2)

        erasure.ERASERS[name] = timed
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    entry = erasure.forget(ws, erasure.Request(identifiers={"customer_id": ids}), actor="benchmark")
    seconds = time.perf_counter() - began
    return {
        "customers_in_workspace": len(profile),
        "forgotten": entry.customers,
        "seconds": round(seconds, 1),
        "places_s": places,
        "removed": entry.removed,
        "tombstones": entry.tombstones,
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "peak_rss_mib": peak_rss_mib(),
    }


def render(result: dict) -> str:
    host, run = result["machine"], result["forget"]
    removed = run["removed"]
    rows = [
        f"| {place} | {run['places_s'].get(place, 0):.2f} s | "
        + ", ".join(f"{name} {n:,}" for name, n in removed[place].items())
        + " |"
        for place in removed
    ]
    size = run["customers_in_workspace"]
    met = "met" if run["seconds"] <= TARGET_S else "**not met**"
    lines = [
        OPEN,
        "## Right to erasure (`cxpredict forget`)",
        "",
        f"Machine: {host['cpus']} CPUs ({host['cpu']}), {host['memory']} RAM, Python {host['python']}; "
        f"shared with other workers (load average {run['load_before']} before, {run['load_after']} after).",
        "",
        f"Command: `.venv/bin/python benchmarks/forget.py --customers {size}` — generated world of {size:,} "
        f"customers, 730 days to {END}, seed 1, ingested, 13 monthly feature snapshots per family, "
        f"materialised online, {LOGGED:,} customers with a logged event and a decision, a score-like export "
        f"in `reports/`; one request forgetting {run['forgotten']:,} customers by id; measured "
        + result["measured"]
        + ".",
        "",
        f"**{run['forgotten']:,} customers forgotten in {run['seconds']:.1f} s** (target for 1,000 of 100,000: "
        f"≤ {TARGET_S:.0f} s; " + (f"{met} at this size" if size < 100_000 else met) + f"), peak RSS "
        f"{run['peak_rss_mib']:,} MiB, {run['tombstones']:,} tombstones written.",
        "",
        "| place | wall | removed |",
        "|---|---:|---|",
        *rows,
        "",
        *[note for note in result.get("notes", [])],
        CLOSE,
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--forget", type=int, default=1_000, help="customers to forget in one request")
    parser.add_argument("--root", type=Path, default=Path("/tmp/cxpredict-bench-forget"))
    parser.add_argument("--note", action="append", default=[], help="a sentence added under the table")
    parser.add_argument("--no-doc", action="store_true", help="print the figures, leave docs/benchmarks.md")
    parser.add_argument("--phase", choices=("prepare", "forget"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    pristine = args.root / f"ws{args.customers}"
    if args.phase == "prepare":
        print(json.dumps(phase_prepare(pristine, args.customers)))
        return
    if args.phase == "forget":
        print(json.dumps(phase_forget(pristine, args.root / "run", args.forget)))
        return
    started = datetime.now(UTC)
    prepared = None
    if not (pristine / "features" / "manifest.json").exists():
        shutil.rmtree(pristine, ignore_errors=True)
        prepared = run_phase(
            __file__, "--phase", "prepare", "--customers", str(args.customers), "--root", str(args.root)
        )
    run = run_phase(__file__, "--phase", "forget", "--customers", str(args.customers), "--forget", str(args.forget),
                 "--root", str(args.root))  # fmt: skip
    finished = datetime.now(UTC)
    result = {
        "machine": machine(),
        "prepare": prepared,
        "forget": run,
        "measured": f"{started:%Y-%m-%d %H:%M}–{finished:%H:%M} UTC",
        "notes": args.note,
    }
    print(json.dumps(result, indent=2))
    if not args.no_doc:
        write_section(OPEN, CLOSE, render(result))


if __name__ == "__main__":
    main()
