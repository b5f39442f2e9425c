"""Benchmark ``cxpredict generate``: wall time, rows per source and peak memory.

    .venv/bin/python benchmarks/generate.py --customers 100000
    .venv/bin/python benchmarks/generate.py --customers 1000000

Prints the figures and rewrites its own section of ``docs/benchmarks.md`` (between
``<!-- generate -->`` and ``<!-- /generate -->``), keeping other sections and the results of
other sizes. The world goes to a temporary workspace, removed afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import DOC, machine, split_doc, write_section  # noqa: E402

from cxpredict.workspace import resolve_workspace  # noqa: E402
from features.synthetic import SOURCES, WorldConfig, generate  # noqa: E402

OPEN, CLOSE = "<!-- generate -->", "<!-- /generate -->"
DATA = re.compile(r"<!-- generate-data (.*?) -->", re.S)
TARGETS = {100_000: 60.0, 1_000_000: 600.0}


def measure(customers: int, seed: int, days: int, end: date, workspace: Path) -> dict:
    ws = resolve_workspace(workspace)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    summary = generate(ws, WorldConfig(customers=customers, seed=seed, days=days, end=end))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    size = sum(f.stat().st_size for f in ws.raw_dir.glob("*.parquet"))
    return {
        "customers": customers,
        "days": days,
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(peak),
        "raw_mib": round(size / 2**20),
        "rows": summary.rows,
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def render(results: dict[str, dict], host: dict[str, str]) -> str:
    lines = [
        OPEN,
        "## Synthetic world generation (`cxpredict generate`)",
        "",
        f"Machine: {host['cpus']} CPUs ({host['cpu']}), {host['memory']} RAM, Python {host['python']}. "
        "The machine is shared with other work: the load average before/after each run is shown, and a "
        "high load makes the figures pessimistic.",
        "",
        "Command: `.venv/bin/python benchmarks/generate.py --customers N` (730 days, seed 1).",
        "",
        "| customers | wall time | target | peak RSS | raw size | rows (all sources) | events | "
        "transactions | load before/after | measured |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key in sorted(results, key=int):
        r = results[key]
        target = TARGETS.get(r["customers"])
        lines.append(
            f"| {r['customers']:,} | {r['seconds']:.1f} s | {f'≤ {target:.0f} s' if target else '—'} | "
            f"{r['peak_rss_mib']:,} MiB | {r['raw_mib']:,} MiB | {sum(r['rows'].values()):,} | "
            f"{r['rows']['events']:,} | {r['rows']['transactions']:,} | {r['load_before']} / {r['load_after']} | "
            f"{r['measured']} |"
        )
    lines += [
        "",
        "Rows per source of the largest run: "
        + ", ".join(f"{s} {results[max(results, key=int)]['rows'][s]:,}" for s in SOURCES)
        + ".",
        "",
    ]
    lines.append(f"<!-- generate-data {json.dumps(results, sort_keys=True)} -->")
    lines.append(CLOSE)
    return "\n".join(lines)


def update_doc(result: dict, host: dict[str, str]) -> None:
    """Add ``result`` to the results kept in the section (one per world size) and re-render it."""
    _, body, _ = split_doc(OPEN, CLOSE)
    found = DATA.search(body or "")
    results: dict[str, dict] = json.loads(found.group(1)) if found else {}
    results[str(result["customers"])] = result
    write_section(OPEN, CLOSE, render(results, host))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--end", type=date.fromisoformat, default=date(2026, 1, 1))
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the generated workspace")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()

    workspace = args.workspace or Path(tempfile.mkdtemp(prefix="cxpredict-bench-generate-"))
    try:
        result = measure(args.customers, args.seed, args.days, args.end, workspace)
    finally:
        if not args.keep:
            shutil.rmtree(workspace, ignore_errors=True)
    host = machine()
    print(json.dumps({"machine": host, **result}, indent=2))
    if not args.no_doc:
        update_doc(result, host)
        print(f"updated {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
