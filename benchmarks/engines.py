"""Benchmark the feature build on DuckDB vs Spark: wall time, CPU time and peak memory of
``build_features`` with each engine on the same generated world, and whether the files agree.

    .venv/bin/python benchmarks/engines.py --customers 5000
    .venv/bin/python benchmarks/engines.py --customers 100000 --master 'local[2]'

Generates (seed 1, 730 days to 2026-11-01) and ingests a world in a temporary workspace, then builds
every snapshot as of 2026-11-01 (12 monthly snapshots plus as-of) once per engine, each in a fresh
process. Peak memory is the largest sum of resident memory over the build process and its
children (Spark's JVM) sampled every 0.1 s; CPU time is theirs too. Both builds' files are then
compared value by value. Prints the figures and rewrites its own section of
``docs/benchmarks.md`` (between ``<!-- engines -->`` and ``<!-- /engines -->``), keeping the results
of other sizes. The workspace is removed afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import DOC, machine, split_doc, write_section  # noqa: E402

OPEN, CLOSE = "<!-- engines -->", "<!-- /engines -->"
DATA = re.compile(r"<!-- engines-data (.*?) -->", re.S)
END = date(2026, 11, 1)
AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
ENGINES = ("duckdb", "spark")


def child(workspace: Path, engine: str) -> None:
    """Child process: one full build with ``engine``; prints a JSON line with the summary."""
    from cxpredict.workspace import resolve_workspace
    from features.snapshots import build_features

    summary = build_features(resolve_workspace(workspace), AS_OF, engine=engine)
    print(
        json.dumps(
            {
                "seconds": summary.seconds,
                "customers": summary.customers,
                "snapshots_built": summary.snapshots_built,
            }
        )
    )


def _tree(process) -> list:
    import psutil

    try:
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def run_build(workspace: Path, engine: str, master: str) -> dict:
    """One build in a fresh process, sampling the resident memory and CPU time of its process tree."""
    import psutil

    shutil.rmtree(workspace / "features", ignore_errors=True)
    env = {**os.environ, "CXPREDICT_SPARK_MASTER": master, "OMP_WAIT_POLICY": "PASSIVE"}
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    popen = subprocess.Popen(
        [sys.executable, __file__, "--child", engine, "--workspace", str(workspace)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    root = psutil.Process(popen.pid)
    peak, cpu = 0, {}
    while popen.poll() is None:
        rss = 0
        for process in _tree(root):
            try:
                rss += process.memory_info().rss
                times = process.cpu_times()
                cpu[process.pid] = times.user + times.system
            except psutil.NoSuchProcess:
                continue
        peak = max(peak, rss)
        time.sleep(0.1)
    out, err = popen.communicate()
    wall = time.perf_counter() - started
    if popen.returncode != 0:
        raise RuntimeError(f"{engine} build failed:\n{err[-4000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    return {
        "engine": engine,
        "build_seconds": result["seconds"],
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(sum(cpu.values()), 1),
        "peak_rss_mib": round(peak / 2**20),
        "snapshots": result["snapshots_built"],
        "customers_known": result["customers"],
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def differing_values(left: Path, right: Path) -> tuple[int, int]:
    """(files compared, values that differ) between two feature folders: equal, both null, or
    floats within 1e-9 relative."""
    import numpy as np
    import pyarrow.parquet as pq

    files = sorted(p.relative_to(left) for p in left.rglob("data.parquet"))
    if files != sorted(p.relative_to(right) for p in right.rglob("data.parquet")):
        raise RuntimeError("the two builds wrote different files")
    differ = 0
    for name in files:
        a = pq.read_table(left / name).sort_by("customer_id").to_pandas()
        b = pq.read_table(right / name).sort_by("customer_id").to_pandas()
        for column in a.columns.drop("created_timestamp"):
            x, y = a[column], b[column]
            if x.dtype.kind == "f":
                same = np.isclose(x, y, rtol=1e-9, atol=0.0, equal_nan=True)
            else:
                same = (x.isna() & y.isna()) | (x == y)
            differ += int((~np.asarray(same)).sum())
    return len(files), differ


def measure(customers: int, master: str, workspace: Path) -> dict:
    from cxpredict.workspace import resolve_workspace
    from features.ingest import ingest
    from features.synthetic import WorldConfig, generate

    ws = resolve_workspace(workspace).ensure()
    generate(ws, WorldConfig(customers=customers, seed=1, days=730, end=END))
    ingest(ws)
    runs, kept = {}, {}
    for engine in ENGINES:
        runs[engine] = run_build(workspace, engine, master)
        kept[engine] = workspace / f"features-{engine}"
        shutil.rmtree(kept[engine], ignore_errors=True)
        shutil.move(workspace / "features", kept[engine])
    files, differ = differing_values(kept["duckdb"], kept["spark"])
    return {
        "customers": customers,
        "spark_master": master,
        "runs": runs,
        "files_compared": files,
        "values_differing": differ,
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def render(results: dict[str, dict], host: dict[str, str]) -> str:
    lines = [
        OPEN,
        "## Feature engines: DuckDB vs Spark (`cxpredict features --engine`)",
        "",
        f"Machine: {host['cpus']} CPUs ({host['cpu']}), {host['memory']} RAM, Python {host['python']}. "
        "Shared with other work: the load average before/after each build is shown.",
        "",
        "Command: `.venv/bin/python benchmarks/engines.py --customers N` (730 days, seed 1; 13 snapshots "
        "as of 2026-11-01; DuckDB with 2 threads, Spark with the given master). Peak RSS sums the build "
        "process and its children (Spark's JVM); CPU is theirs too. *Differing* counts the values of "
        "the two builds' files that are not equal (floats: within 1e-9 relative).",
        "",
        "| customers | engine | build | CPU | peak RSS | files | differing | load before/after | measured |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key in sorted(results, key=int):
        r = results[key]
        for engine, run in r["runs"].items():
            label = engine if engine == "duckdb" else f"spark {r['spark_master']}"
            lines.append(
                f"| {r['customers']:,} | {label} | {run['build_seconds']:.1f} s | {run['cpu_seconds']:.1f} s | "
                f"{run['peak_rss_mib']:,} MiB | {r['files_compared']} | {r['values_differing']} | "
                f"{run['load_before']} / {run['load_after']} | {r['measured']} |"
            )
    lines += ["", f"<!-- engines-data {json.dumps(results, sort_keys=True)} -->", CLOSE]
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
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--master", default="local[2]", help="Spark master for the Spark build")
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the generated workspace")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.workspace, args.child)
        return
    workspace = args.workspace or Path(tempfile.mkdtemp(prefix="cxpredict-bench-engines-"))
    try:
        result = measure(args.customers, args.master, workspace)
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
