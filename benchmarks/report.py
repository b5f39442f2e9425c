"""What every benchmark script shares: the machine, its own marked section of docs/benchmarks.md
(the other sections are left as they are), and phases run in fresh processes, so that each peak RSS
and CPU time is the phase's own."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> dict[str, str]:
    import psutil

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": str(os.cpu_count()),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "cpu": model,
        "python": platform.python_version(),
    }


def split_doc(open_marker: str, close_marker: str) -> tuple[str, str | None, str]:
    """(text before the section, the section's current body or None, text after it)."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if open_marker in text and close_marker in text:
        head, rest = text.split(open_marker, 1)
        body, tail = rest.split(close_marker, 1)
        return head, body, tail
    return text.rstrip("\n") + "\n\n", None, "\n"


def write_section(open_marker: str, close_marker: str, section: str) -> None:
    """Replace (or append) the section; ``section`` includes both markers."""
    head, _, tail = split_doc(open_marker, close_marker)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(head + section + tail)


def peak_rss_mib() -> int:
    """Peak resident memory of this process so far."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10)


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 1)


def run_phase(script: str, *args: str) -> dict:
    """Run ``script`` with ``args`` (a phase) in a fresh process, quiet and on the workspace's own
    MLflow store; its last stdout line is its JSON result."""
    env = {
        **os.environ,
        "OMP_WAIT_POLICY": "PASSIVE",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "DO_NOT_TRACK": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, script, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"phase {args[:2]} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def generated_world(workspace: Path, customers: int, end, as_of) -> tuple[object, dict[str, float]]:
    """Generate (seed 1, 730 days to ``end``), ingest and featurise (as of ``as_of``, Feast repo
    applied) a world in ``workspace``; returns the workspace and the seconds of each step."""
    import time

    from cxpredict.workspace import resolve_workspace
    from features.ingest import ingest
    from features.snapshots import build_features
    from features.store import apply_repo
    from features.synthetic import WorldConfig, generate

    ws = resolve_workspace(workspace).ensure()
    marks = {}
    began = time.perf_counter()
    generate(ws, WorldConfig(customers=customers, seed=1, days=730, end=end))
    marks["generate_s"] = round(time.perf_counter() - began, 1)
    began = time.perf_counter()
    ingest(ws)
    marks["ingest_s"] = round(time.perf_counter() - began, 1)
    began = time.perf_counter()
    build_features(ws, as_of)
    apply_repo(ws)
    marks["features_s"] = round(time.perf_counter() - began, 1)
    return ws, marks
