"""Benchmark the prediction API (``cxpredict serve``) under load, against Feast's own online retrieval.

    .venv/bin/python benchmarks/serving.py                          # ./.cxpredict (what `make demo` fills)
    .venv/bin/python benchmarks/serving.py --workspace /tmp/ws --quick --no-doc   # smoke run
    .venv/bin/python benchmarks/serving.py --stores sqlite,redis    # both online stores, side by side

Starts the real server (BentoML, one worker) on the workspace's champion models with a fresh API
key, waits for ``/readyz``, then drives ``POST /predict`` with random known customers (seeded) from
a small asyncio client: raw keep-alive HTTP/1.1, precomputed request bytes, one connection per
concurrent worker, closed loop. The client shares the machine's cores with the server, so it is
kept cheap (its CPU per request is reported). Phases, in order, each after its own warm-up:

1. one customer per request, concurrency 8 (target p50 <= 5 ms, p99 <= 15 ms);
2. 100 customers per request, concurrency 1 (target p99 <= 60 ms), then concurrency 8;
3. one customer per request, concurrency 8, for 60 s (target >= 300 requests/s, zero errors);
   then ``POST /decide`` for one customer at concurrency 1 (target p50 <= 5 ms) and 8 (each answer is
   a decision committed to the durable decision log: its rate is the log's write rate);
4. with the server stopped, in this process: Feast's ``get_online_features`` for the feature
   services /predict reads, on the 100-customer sets of phase 2 (the service must beat it), and the
   fast reader (``features.online.OnlineReader``) on the same sets for context;
5. in this process: every champion LightGBM head's score for one customer through ``Booster.predict``
   and through the single-row fast path the service uses, taken in turns (equal answers checked).

``--stores`` runs every phase once per online store, in the order given: ``sqlite`` serves the
workspace's own store; ``redis`` serves a copy of the workspace whose store is a Feast project of
its own on the Redis server (``--redis``, default 127.0.0.1:6379), materialised by the atomic Redis
writer (``features.redis_online``) before the server starts and deleted after. The targets are
judged on the first store; a table puts the stores side by side.

Any non-200 answer or connection error counts as an error. Prints a table and JSON and rewrites the
``<!-- serving -->`` section of docs/benchmarks.md (other sections kept); ``--quick`` shortens
every phase for a smoke run and never writes the doc.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import DOC, machine, write_section  # noqa: E402

from cxpredict import tasks as registry  # noqa: E402

OPEN, CLOSE = "<!-- serving -->", "<!-- /serving -->"
STORES = ("sqlite", "redis")
TASKS = registry.names()
READER_SERVICES = (*TASKS, "realtime_signals")
SEED = 7
ONE_P50_MS, ONE_P99_MS, HUNDRED_P99_MS, RATE_TARGET = 5.0, 15.0, 60.0, 300.0
DECIDE_P50_MS = 5.0


@dataclass(frozen=True)
class Plan:
    """Sizes of every phase (requests, or seconds for the sustained one)."""

    warmup: int = 200
    warmup_hundred: int = 200
    single: int = 4000
    hundred_c1: int = 300
    hundred_c8: int = 400
    sustained_s: float = 60.0
    feast_calls: int = 50
    decide_c1: int = 1000
    decide_c8: int = 2000
    models_calls: int = 2000


QUICK = Plan(warmup_hundred=40, single=600, hundred_c1=60, hundred_c8=80, sustained_s=5.0, feast_calls=10,
             decide_c1=200, decide_c8=300, models_calls=200)  # fmt: skip


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


# --------------------------------------------------------------------------- workspace


def champion_versions(ws) -> dict[str, str] | str:
    """Champion version per task, or why the workspace cannot be served (checked before starting)."""
    if not os.environ.get("MLFLOW_TRACKING_URI") and not (ws.mlflow_dir / "mlflow.db").exists():
        return f"no model registry under {ws.mlflow_dir}"
    if not (ws.feast_dir / "online_store.db").exists() and not (ws.feast_dir / "registry.db").exists():
        return f"no Feast online store under {ws.feast_dir}"
    from training.tracking import resolve_tracking, version_info

    target = resolve_tracking(ws)
    versions, missing = {}, []
    for task in TASKS:
        info = version_info(target, task)
        if info is None:
            missing.append(task)
        else:
            versions[task] = info["version"]
    return f"no champion model for {', '.join(missing)}" if missing else versions


def customer_pool(ws) -> list[str]:
    """Every customer known at the features' as-of date (a few have withheld consent: kept)."""
    from training.data import default_as_of, known_customers

    return [str(c) for c in known_customers(ws, default_as_of(ws)).tolist()]


# --------------------------------------------------------------------------- server


def free_port(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


class Server:
    """``cxpredict serve`` in its own session (BentoML spawns children: the whole group is stopped)."""

    def __init__(
        self, ws_root: Path, port: int, key: str, log_path: Path, workers: int, env: dict | None = None
    ) -> None:
        executable = Path(sys.executable).parent / "cxpredict"
        command = [str(executable), "serve", "--workspace", str(ws_root), "--port", str(port)]
        command += ["--reload-seconds", "0", "--workers", str(workers)]
        env = {
            **os.environ,
            "CXPREDICT_API_KEYS": key,
            "OMP_WAIT_POLICY": "PASSIVE",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            **(env or {}),
        }
        self.port, self.log_path = port, log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout_s: float = 180.0) -> dict:
        """The ``/readyz`` body once it answers 200; raises with the last answer (or the log) otherwise."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"the server exited with code {code}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as answer:
                    return json.loads(answer.read())
            except urllib.error.HTTPError as refused:
                last = f"{refused.code}: {refused.read()[:2000].decode(errors='replace')}"
            except (OSError, ValueError) as failure:
                last = type(failure).__name__
            time.sleep(0.5)
        raise RuntimeError(
            f"the server was not ready after {timeout_s:.0f} s (last /readyz: {last})\n{self.log_tail()}"
        )

    def cpu_seconds(self) -> float:
        """User + system CPU of the server's process tree so far."""
        import psutil

        try:
            root = psutil.Process(self.process.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return float("nan")
        total = 0.0
        for proc in tree:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_bytes()[-chars:].decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
            except ProcessLookupError:
                pass
        try:  # children left in the group after the leader exited
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()


# --------------------------------------------------------------------------- load generator


def request_bytes(port: int, key: str, ids: list[str], path: str = "/predict") -> bytes:
    body = json.dumps({"customer_ids": ids}, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def request_set(
    pool: list[str], size: int, count: int, port: int, key: str, seed: int, path: str = "/predict"
) -> tuple[list[bytes], list[list[str]]]:
    """``count`` requests of ``size`` distinct random known customers (seeded), and their id lists."""
    import numpy as np

    rng = np.random.default_rng(seed)
    picks = [[pool[i] for i in rng.choice(len(pool), size, replace=False)] for _ in range(count)]
    return [request_bytes(port, key, ids, path) for ids in picks], picks


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes, bool]:
    """Send one request, read exactly one response: (status, body, server keeps the connection)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.index(b"\r\n", at + 2)
        body = await reader.readexactly(int(lower[at + 17 : end]))
    elif b"\r\ntransfer-encoding: chunked" in lower:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    else:
        raise ValueError("response without a length")
    return status, body, b"\r\nconnection: close" not in lower


@dataclass
class Run:
    """One phase: latencies (s) of successful requests, completion times, errors by kind."""

    name: str
    size: int
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    completed_at: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def drive(
    port: int,
    requests: list[bytes],
    concurrency: int,
    run: Run,
    total: int | None = None,
    seconds: float | None = None,
    offset: int = 0,
) -> None:
    """Closed loop: ``concurrency`` workers, each on its own keep-alive connection, send the next request
    as soon as the previous answer is read, until ``total`` requests were sent or ``seconds`` passed."""
    issued = [0]
    began = time.perf_counter()
    deadline = began + seconds if seconds is not None else float("inf")
    perf = time.perf_counter
    n = len(requests)

    def more() -> bool:
        if total is not None and issued[0] >= total:
            return False
        return perf() < deadline

    async def worker(index: int) -> None:
        connection = None
        while more():
            position = offset + issued[0]
            issued[0] += 1
            request = requests[position % n]
            try:
                if connection is None:
                    connection = await asyncio.open_connection("127.0.0.1", port)
                reader, writer = connection
                start = perf()
                status, _, keep = await exchange(reader, writer, request)
                done = perf()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as failure:
                run.error(type(failure).__name__)
                if connection is not None:
                    connection[1].close()
                connection = None
                await asyncio.sleep(0.05)
                continue
            if status == 200:
                run.latencies.append(done - start)
                run.completed_at.append(done - began)
            else:
                run.error(f"HTTP {status}")
            if not keep:
                writer.close()
                connection = None
        if connection is not None:
            connection[1].close()

    limit = (seconds or 0.0) + 2.0 * (total or 0) / concurrency + 120.0  # a stalled server fails the phase
    try:
        await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(concurrency))), limit)
    except TimeoutError as stalled:
        message = f"{run.name}: not over after {limit:.0f} s: the server stopped answering"
        raise RuntimeError(message) from stalled
    run.seconds = perf() - began


def measure(
    server: Server,
    name: str,
    requests: list[bytes],
    size: int,
    concurrency: int,
    *,
    warmup: int,
    total: int | None = None,
    seconds: float | None = None,
) -> Run:
    """Warm up with ``warmup`` requests of the same shape, then measure one phase."""
    warm = Run(f"{name} warm-up", size, concurrency)
    asyncio.run(drive(server.port, requests, concurrency, warm, total=warmup))
    if warm.errors:
        raise RuntimeError(f"{name}: errors during warm-up {warm.errors}\n{server.log_tail()}")
    run = Run(name, size, concurrency, load_before=load_average())
    cpu, server_cpu = time.process_time(), server.cpu_seconds()
    asyncio.run(drive(server.port, requests, concurrency, run, total=total, seconds=seconds, offset=warmup))
    run.client_cpu_s = time.process_time() - cpu
    run.server_cpu_s = server.cpu_seconds() - server_cpu
    run.load_after = load_average()
    return run


def check_answer(port: int, request: bytes, size: int) -> dict:
    """One request read in full: a 200 with one prediction per customer and every task's block."""

    async def once():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await exchange(reader, writer, request)
        finally:
            writer.close()

    status, body, _ = asyncio.run(once())
    if status != 200:
        raise RuntimeError(f"/predict answered {status}: {body[:500].decode(errors='replace')}")
    answer = json.loads(body)
    if len(answer.get("predictions", [])) != size or set(answer.get("models", {})) != set(TASKS):
        raise RuntimeError(f"/predict answered 200 with an unexpected body: keys {sorted(answer)}")
    return answer


# --------------------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def summary(run: Run) -> dict:
    import numpy as np

    ms = [v * 1000 for v in run.latencies]
    count = len(run.latencies)
    errors = sum(run.errors.values())
    per_second = np.bincount(np.asarray(run.completed_at, dtype=float).astype(int)) if count else np.zeros(1)
    whole = per_second[: int(run.seconds)] if run.seconds >= 1 else per_second
    return {
        "name": run.name,
        "customers_per_request": run.size,
        "concurrency": run.concurrency,
        "requests": count + errors,
        "ok": count,
        "errors": errors,
        "error_kinds": run.errors,
        "seconds": round(run.seconds, 2),
        "rate": round(count / run.seconds, 1) if run.seconds else 0.0,
        "rate_median_1s": float(np.median(whole)) if len(whole) else 0.0,
        "rate_min_1s": int(whole.min()) if len(whole) else 0,
        "p50_ms": round(percentile(ms, 50), 2),
        "p90_ms": round(percentile(ms, 90), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2) if ms else float("nan"),
        "mean_ms": round(sum(ms) / count, 2) if count else float("nan"),
        "client_cpu_us_per_request": round(run.client_cpu_s / max(count + errors, 1) * 1e6, 1),
        "server_cpu_ms_per_request": round(run.server_cpu_s / max(count + errors, 1) * 1000, 3),
        "server_cores": round(run.server_cpu_s / run.seconds, 2) if run.seconds else 0.0,
        "load_before": run.load_before,
        "load_after": run.load_after,
    }


# --------------------------------------------------------------------------- Feast reference


def feast_reference(ws, id_sets: list[list[str]], calls: int, settings=None) -> dict:
    """Features only, in this process, for the 100-customer sets of the HTTP phase: Feast's
    ``get_online_features`` on each of the services /predict reads (one call each), and
    the fast reader on their union with the realtime counters (what the service reads)."""
    import warnings

    from features.store import open_store  # Feast resets warning filters on import

    warnings.filterwarnings("ignore")
    from features.online import OnlineReader

    store = open_store(ws, settings)
    services = {name: store.get_feature_service(name) for name in TASKS}
    reader = OnlineReader(store)

    def sdk(ids: list[str]) -> dict[str, float]:
        now = datetime.now(UTC)
        rows = [{"customer_id": c, "request_time": now} for c in ids]
        spent = {}
        for name, service in services.items():
            start = time.perf_counter()
            result = store.get_online_features(features=service, entity_rows=rows).to_dict()
            spent[name] = time.perf_counter() - start
            if len(result["customer_id"]) != len(ids):
                rows = len(result["customer_id"])
                raise RuntimeError(f"Feast answered {rows} rows for {len(ids)} customers")
        return spent

    def fast(ids: list[str]) -> float:
        start = time.perf_counter()
        result = reader.read(ids, READER_SERVICES, datetime.now(UTC))
        spent = time.perf_counter() - start
        if len(result["customer_id"]) != len(ids):
            raise RuntimeError("the fast reader answered a wrong number of rows")
        return spent

    for ids in id_sets[:3]:  # warm-up: registry caches, plans, SQLite pages
        sdk(ids)
        fast(ids)
    gc.collect()
    gc.freeze()  # as the serving process does after start-up
    load_before = load_average()
    by_service: dict[str, list[float]] = {name: [] for name in TASKS}
    totals, reads = [], []
    for i in range(calls):
        ids = id_sets[i % len(id_sets)]
        spent = sdk(ids)
        for name, seconds in spent.items():
            by_service[name].append(seconds * 1000)
        totals.append(sum(spent.values()) * 1000)
        reads.append(fast(ids) * 1000)
    gc.unfreeze()
    return {
        "calls": calls,
        "customers": len(id_sets[0]),
        "sdk_p50_ms": round(percentile(totals, 50), 1),
        "sdk_p99_ms": round(percentile(totals, 99), 1),
        "sdk_by_service_p50_ms": {name: round(percentile(v, 50), 1) for name, v in by_service.items()},
        "reader_p50_ms": round(percentile(reads, 50), 2),
        "reader_p99_ms": round(percentile(reads, 99), 2),
        "load_before": load_before,
        "load_after": load_average(),
    }


def models_reference(ws, ids: list[str], calls: int) -> dict:
    """Every champion LightGBM head's score for one customer, in this process: ``Booster.predict``
    (LightGBM's Python API) against the single-row fast path the service uses
    (``training.model_bundle.RowPredictor``), on the same prepared rows of real customers, taken in
    turns; the two must answer the same."""
    import numpy as np

    from features.online import OnlineReader
    from features.store import open_store
    from training.model_bundle import RowPredictor
    from training.scoring import load_models
    from training.tracking import resolve_tracking

    bundles = [model.unwrap_python_model().bundle for model in load_models(resolve_tracking(ws)).values()]
    reader = OnlineReader(open_store(ws))
    rows = [
        [
            bundle.prepare_matrix(reader.read([customer], READER_SERVICES, datetime.now(UTC)), 1)
            for bundle in bundles
        ]
        for customer in ids
    ]
    heads = [
        (j, booster, RowPredictor(booster))
        for j, bundle in enumerate(bundles)
        for booster in bundle.boosters.values()
    ]
    for matrices in rows:
        for j, booster, fast in heads:
            if not np.array_equal(booster.predict(matrices[j], num_threads=1), fast.predict(matrices[j])):
                raise RuntimeError("the single-row fast path and Booster.predict disagree")

    def timed(score) -> float:
        start = time.perf_counter()
        for j, booster, fast in heads:
            score(booster, fast, matrices[j])
        return (time.perf_counter() - start) * 1000

    python_api, fast_path = [], []
    for i in range(calls):
        matrices = rows[i % len(rows)]
        python_api.append(timed(lambda booster, fast, X: booster.predict(X, num_threads=1)))
        fast_path.append(timed(lambda booster, fast, X: fast.predict(X)))
    booster_p50, fast_p50 = percentile(python_api, 50), percentile(fast_path, 50)
    return {
        "heads": len(heads),
        "customers": len(rows),
        "calls": calls,
        "booster_predict_p50_ms": round(booster_p50, 3),
        "fast_path_p50_ms": round(fast_p50, 3),
        "ratio": round(booster_p50 / fast_p50, 2),
    }


# --------------------------------------------------------------------------- report


def verdicts(result: dict) -> list[tuple[str, str, str, bool | None]]:
    """(metric, target, measured, met) rows; met is None where there is no target."""
    phases, feast = result["phases"], result["feast"]
    one, c1, c8, held = (phases[k] for k in ("single", "hundred_c1", "hundred_c8", "sustained"))
    decide, decide_c8 = phases["decide_c1"], phases["decide_c8"]
    ratio = c1["p99_ms"] / feast["sdk_p99_ms"]
    every_error = sum(p["errors"] for p in phases.values())
    return [
        (
            "1 customer/request, concurrency 8: p50",
            f"≤ {ONE_P50_MS:g} ms",
            f"{one['p50_ms']:.2f} ms",
            one["p50_ms"] <= ONE_P50_MS,
        ),
        (
            "1 customer/request, concurrency 8: p99",
            f"≤ {ONE_P99_MS:g} ms",
            f"{one['p99_ms']:.2f} ms",
            one["p99_ms"] <= ONE_P99_MS,
        ),
        (
            "100 customers/request, concurrency 1: p99",
            f"≤ {HUNDRED_P99_MS:g} ms",
            f"{c1['p99_ms']:.1f} ms (p50 {c1['p50_ms']:.1f})",
            c1["p99_ms"] <= HUNDRED_P99_MS,
        ),
        (
            "100 customers/request, concurrency 8: p99",
            "— (reported)",
            f"{c8['p99_ms']:.1f} ms (p50 {c8['p50_ms']:.1f}, {c8['rate']:.0f} req/s)",
            None,
        ),
        (
            f"sustained {held['seconds']:.0f} s, 1 customer/request, concurrency 8: throughput",
            f"≥ {RATE_TARGET:g} req/s",
            f"{held['rate']:.0f} req/s (median 1-s window {held['rate_median_1s']:.0f}, "
            f"slowest {held['rate_min_1s']})",
            held["rate"] >= RATE_TARGET,
        ),
        (
            "errors (sustained phase; every phase)",
            "0",
            f"{held['errors']} of {held['requests']:,}; {every_error} in all",
            held["errors"] == 0 and every_error == 0,
        ),
        (
            "/decide, 1 customer/request, concurrency 1: p50 (features + every model + decision + durable log)",
            f"≤ {DECIDE_P50_MS:g} ms",
            f"{decide['p50_ms']:.2f} ms (p99 {decide['p99_ms']:.2f})",
            decide["p50_ms"] <= DECIDE_P50_MS,
        ),
        (
            "/decide, concurrency 8: decisions committed to the decision log per second",
            "— (reported)",
            f"{decide_c8['rate']:.0f} decisions/s (p50 {decide_c8['p50_ms']:.2f} ms, p99 {decide_c8['p99_ms']:.2f})",
            None,
        ),
        (
            "100 customers, p99: service over HTTP (c=1; features + every model + drivers) vs Feast SDK "
            "(every service, features only)",
            "service < Feast",
            f"{c1['p99_ms']:.1f} vs {feast['sdk_p99_ms']:.1f} ms ({ratio:.2f}×)",
            ratio < 1.0,
        ),
    ]


PHASE_COLUMNS = (
    "phase",
    "requests",
    "errors",
    "req/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "server CPU/req",
    "server cores busy",
    "client CPU/req",
    "load before/after",
)


def phase_rows(result: dict) -> list[list[str]]:
    return [
        [
            f"{'/decide' if name.startswith('decide') else '/predict'} {p['customers_per_request']} "
            f"customer(s), c={p['concurrency']}, {p['seconds']:.0f} s",
            f"{p['requests']:,}",
            str(p["errors"]),
            f"{p['rate']:.0f}",
            *(f"{p[k]:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms")),
            f"{p['max_ms']:.1f}",
            f"{p['server_cpu_ms_per_request']:.2f} ms",
            f"{p['server_cores']:.2f}",
            f"{p['client_cpu_us_per_request']:.0f} µs",
            f"{p['load_before']} / {p['load_after']}",
        ]
        for name, p in result["phases"].items()
    ]


SIDE_BY_SIDE = (
    ("/predict 1 customer, c=8: p50 ms", "single", "p50_ms"),
    ("/predict 1 customer, c=8: p99 ms", "single", "p99_ms"),
    ("/predict 100 customers, c=1: p50 ms", "hundred_c1", "p50_ms"),
    ("/predict 100 customers, c=1: p99 ms", "hundred_c1", "p99_ms"),
    ("/predict 100 customers, c=8: p50 ms", "hundred_c8", "p50_ms"),
    ("/predict 100 customers, c=8: req/s", "hundred_c8", "rate"),
    ("/predict 1 customer, c=8, sustained: req/s", "sustained", "rate"),
    ("/predict 1 customer, c=8, sustained: server CPU ms/request", "sustained", "server_cpu_ms_per_request"),
    ("/decide 1 customer, c=1: p50 ms", "decide_c1", "p50_ms"),
    ("/decide 1 customer, c=8: decisions/s", "decide_c8", "rate"),
    ("features only, 100 customers, fast reader: p50 ms", "feast", "reader_p50_ms"),
    ("features only, 100 customers, fast reader: p99 ms", "feast", "reader_p99_ms"),
    ("features only, 100 customers, Feast SDK (every service): p50 ms", "feast", "sdk_p50_ms"),
)


def store_rows(result: dict) -> tuple[tuple[str, ...], list[list[str]]]:
    """(header, rows) of the stores side by side, with each later store's ratio to the first."""
    names = list(result["stores"])
    first = names[0]
    header = ("metric", *names, *(f"{name} / {first}" for name in names[1:]))

    def value(store: dict, part: str, key: str) -> float:
        return store[part][key] if part == "feast" else store["phases"][part][key]

    rows = []
    for metric, part, key in SIDE_BY_SIDE:
        values = [value(result["stores"][name], part, key) for name in names]
        ratios = [f"{v / values[0]:.2f}×" if values[0] else "—" for v in values[1:]]
        rows.append([metric, *(f"{v:,.2f}" if v < 100 else f"{v:,.0f}" for v in values), *ratios])
    errors = [sum(p["errors"] for p in result["stores"][name]["phases"].values()) for name in names]
    rows.append(["errors, every phase", *map(str, errors), *("—" for _ in names[1:])])
    ready = [result["stores"][name]["startup_s"] for name in names]
    rows.append(["server ready, s", *(f"{v:.0f}" for v in ready), *("—" for _ in names[1:])])
    return header, rows


def markdown(header: tuple[str, ...], rows: list[list[str]], align: str) -> list[str]:
    """A Markdown table; ``align`` has one letter per column (l or r)."""
    rule = "|".join("---" if a == "l" else "---:" for a in align)
    return ["| " + " | ".join(header) + " |", f"|{rule}|", *("| " + " | ".join(row) + " |" for row in rows)]


def render(result: dict) -> str:
    host, feast, plan = result["machine"], result["feast"], result["plan"]
    c1 = result["phases"]["hundred_c1"]
    by_service = ", ".join(f"{k} {v:.1f}" for k, v in feast["sdk_by_service_p50_ms"].items())
    versions = ", ".join(f"{task} v{version}" for task, version in result["versions"].items())
    checks = verdicts(result)
    lines = [
        OPEN,
        "## Prediction API (`cxpredict serve`, `POST /predict`)",
        "",
        f"Machine: {host['cpus']} CPUs ({host['cpu']}), {host['memory']} RAM, Python {host['python']}; "
        "the load generator runs on the same cores as the server. Load average before/after the run: "
        f"{result['load_before']} / {result['load_after']}.",
        "",
        f"Online store: {result.get('store', 'sqlite')}. Command: `{result['command']}` — workspace of "
        f"{result['customers']:,} known customers "
        f"(features as of {result['features_as_of']}), champions {versions}; measured {result['measured']}.",
        "",
        f"Setup: {result['workers']} BentoML worker process(es) (`cxpredict serve --reload-seconds 0 --workers "
        f"{result['workers']}`, ready in {result['startup_s']:.0f} s), API key checked on every request, access "
        "log on; each keep-alive connection stays with the worker that accepted it, so an uneven split shows "
        "as fewer server cores busy; customers drawn at random (seeded) "
        "from every known customer, withheld consents included. The client is asyncio over raw keep-alive "
        "HTTP/1.1 connections, one per concurrent worker, closed loop; each phase follows its own warm-up "
        f"({plan['warmup']} requests; {plan['warmup_hundred']} with 100 customers). Any non-200 answer or "
        "connection error counts as an error. Figures are over the whole phase (p50 is its median).",
        "",
        *markdown(
            ("metric", "target", "measured", "met?"),
            [[m, t, v, "—" if ok is None else ("yes" if ok else "**no**")] for m, t, v, ok in checks],
            "llrl",
        ),
        "",
        "Phases, in the order run (server CPU: the server's process tree, per request and in cores busy "
        "over the phase; client CPU: the load generator's):",
        "",
        *markdown(PHASE_COLUMNS, phase_rows(result), "l" + "r" * (len(PHASE_COLUMNS) - 1)),
        "",
        f"Reference, features only, in this process after the server stopped, on the same 100-customer sets "
        f"({feast['calls']} calls, `gc.freeze()` after warm-up as the server does; load "
        f"{feast['load_before']} / {feast['load_after']}):",
        "",
        *markdown(
            ("100 customers", "p50 ms", "p99 ms"),
            [
                [
                    f"Feast SDK `get_online_features`, services churn + next_purchase + unmet_needs "
                    f"(p50 per service: {by_service})",
                    f"{feast['sdk_p50_ms']:.1f}",
                    f"{feast['sdk_p99_ms']:.1f}",
                ],
                [
                    "CX Predict fast reader (`OnlineReader.read`: every service + realtime_signals, one read)",
                    f"{feast['reader_p50_ms']:.2f}",
                    f"{feast['reader_p99_ms']:.2f}",
                ],
                [
                    "the service over HTTP, concurrency 1 (features + every model + drivers)",
                    f"{c1['p50_ms']:.1f}",
                    f"{c1['p99_ms']:.1f}",
                ],
            ],
            "lrr",
        ),
        "",
        f"Ratios, service / Feast SDK for 100 customers: p50 {c1['p50_ms'] / feast['sdk_p50_ms']:.2f}×, "
        f"p99 {c1['p99_ms'] / feast['sdk_p99_ms']:.2f}×.",
        "",
    ]
    models = result.get("models")
    if models:
        lines += [
            f"Models for one customer, in this process: the {models['heads']} LightGBM heads of the champions "
            f"score one real customer ({models['customers']} in turns, {models['calls']} calls each way) in "
            f"{models['booster_predict_p50_ms']:.2f} ms (p50) through `Booster.predict` and "
            f"{models['fast_path_p50_ms']:.2f} ms through the single-row fast path the service uses "
            f"(`RowPredictor`, LightGBM's `LGBM_BoosterPredictForMatSingleRowFast`): {models['ratio']:.1f}× "
            "faster, with equal answers.",
            "",
        ]
    if len(result.get("stores", {})) > 1:
        header, rows = store_rows(result)
        redis = result["stores"].get("redis", {})
        copy = (
            f" The Redis server holds a copy of the workspace under a Feast project of its own, materialised "
            f"by the atomic Redis writer ({redis['materialise_s']:.1f} s: staging keys, then one "
            "`MULTI`/`EXEC` swap) before its server started, and deleted after."
            if redis.get("materialise_s") is not None
            else ""
        )
        lines += [
            f"### Online stores side by side ({', '.join(result['stores'])})",
            "",
            "The same load, the same request sets and the same models, one store after the other in this "
            f"run; the tables above are the {result['store']} store's.{copy}",
            "",
            *markdown(header, rows, "l" + "r" * (len(header) - 1)),
            "",
        ]
    missed = [metric for metric, _, _, met in checks if met is False]
    one, held = result["phases"]["single"], result["phases"]["sustained"]
    lines += [
        "In a closed loop, throughput × mean latency = concurrency (Little's law): at concurrency 8, "
        f"a p50 of {ONE_P50_MS:g} ms needs about {8000 / ONE_P50_MS:,.0f} requests/s, and "
        f"{RATE_TARGET:g} requests/s means about {8000 / RATE_TARGET:.0f} ms per request. The service "
        f"answered {held['rate']:.0f} requests/s (mean {held['mean_ms']:.1f} ms) using "
        f"{held['server_cpu_ms_per_request']:.2f} ms of server CPU per one-customer request "
        f"({held['server_cores']:.2f} cores busy); its p50 at concurrency 8 was {one['p50_ms']:.1f} ms.",
        "",
    ]
    verdict = f"Targets **not met**: {'; '.join(missed)}." if missed else "Every target is met in this run."
    lines.append(verdict)
    for note in result.get("notes", []):
        lines += ["", note]
    lines += ["", CLOSE]
    return "\n".join(lines)


def print_report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 160))
    phases = Table(title="POST /predict")
    for column in PHASE_COLUMNS:
        phases.add_column(column, justify="left" if column == "phase" else "right")
    for row in phase_rows(result):
        phases.add_row(*row)
    console.print(phases)
    targets = Table(title="targets")
    for column in ("metric", "target", "measured", "met?"):
        targets.add_column(column)
    for metric, target, measured, met in verdicts(result):
        targets.add_row(metric, target, measured, "—" if met is None else ("yes" if met else "[red]no[/red]"))
    console.print(targets)
    if len(result.get("stores", {})) > 1:
        header, rows = store_rows(result)
        stores = Table(title="online stores side by side")
        for column in header:
            stores.add_column(column, justify="left" if column == "metric" else "right")
        for row in rows:
            stores.add_row(*row)
        console.print(stores)


# --------------------------------------------------------------------------- main


@dataclass
class Served:
    """One online store to serve: its workspace, Feast settings (None: the environment's) and the
    server's extra environment."""

    store: str
    ws: object
    settings: object | None = None
    env: dict = field(default_factory=dict)
    materialise_s: float | None = None


def redis_copy(ws, folder: Path, connection: str) -> Served:
    """A copy of the workspace whose online store is a Feast project of its own on Redis, applied and
    materialised (latest snapshot, the atomic writer) before any server starts."""
    import shutil
    import uuid

    from cxpredict.workspace import resolve_workspace
    from features.feature_repo.definitions import RepoSettings, load_manifest
    from features.store import apply_repo, materialize_latest

    project = f"cxp_bench_{uuid.uuid4().hex[:12]}"
    settings = RepoSettings(online_store="redis", redis_connection_string=connection, project=project)
    target = folder / "redis-ws"
    shutil.copytree(
        ws.root, target, symlinks=True, ignore=shutil.ignore_patterns("*.lock", "online_store.db*")
    )
    copy = resolve_workspace(target)
    apply_repo(copy, settings)
    report = materialize_latest(copy, end=load_manifest(copy.features_dir).as_of, settings=settings)
    if report.method != "fast":
        raise RuntimeError(f"the Redis store was materialised by the {report.method} path")
    env = {
        "CXPREDICT_FEAST_ONLINE_STORE": "redis",
        "CXPREDICT_FEAST_REDIS_CONNECTION_STRING": connection,
        "CXPREDICT_FEAST_PROJECT": project,
    }
    return Served("redis", copy, settings, env, round(report.seconds, 1))


def drop_redis_project(served: Served) -> None:
    """Delete every key of the copy's Feast project (customer hashes, snapshot state, staging)."""
    from features.redis_online import client_of
    from features.store import open_store

    client = client_of(open_store(served.ws, served.settings))
    pattern = f"*{served.settings.project}*".encode()
    doomed = list(client.scan_iter(match=pattern, count=10_000))
    for offset in range(0, len(doomed), 10_000):
        client.delete(*doomed[offset : offset + 10_000])


def request_sets(pool: list[str], port: int, key: str) -> dict:
    """The phases' requests for a server on ``port`` (the same customers for every store)."""
    single, _ = request_set(pool, 1, 4096, port, key, SEED)
    hundred, hundred_ids = request_set(pool, 100, 512, port, key, SEED + 1)
    decide, _ = request_set(pool, 1, 4096, port, key, SEED + 2, path="/decide")
    return {"single": single, "hundred": hundred, "decide": decide, "hundred_ids": hundred_ids}


def serve_and_measure(
    served: Served, args, port: int, plan: Plan, key: str, sets: dict, folder: Path
) -> dict:
    """Every HTTP phase on one store's server, then the in-process features reference."""
    out: dict = {"phases": {}, "workers": args.workers, "materialise_s": served.materialise_s}
    single, hundred, decide = sets["single"], sets["hundred"], sets["decide"]
    gc.collect()
    gc.freeze()
    log = Path(folder) / f"server-{served.store}.log"
    server = Server(served.ws.root, port, key, log, args.workers, served.env)
    try:
        began = time.perf_counter()
        ready = server.wait_ready()
        out["startup_s"] = round(time.perf_counter() - began, 1)
        out["features_as_of"] = ready.get("features_as_of")
        print(
            f"[{served.store}] server ready in {out['startup_s']} s: models {ready.get('models')}", flush=True
        )
        check_answer(port, single[0], 1)
        check_answer(port, hundred[0], 100)
        phases = (
            ("single", single, 1, 8, {"total": plan.single}),
            ("hundred_c1", hundred, 100, 1, {"total": plan.hundred_c1}),
            ("hundred_c8", hundred, 100, 8, {"total": plan.hundred_c8}),
            ("sustained", single, 1, 8, {"seconds": plan.sustained_s}),
            ("decide_c1", decide, 1, 1, {"total": plan.decide_c1}),
            ("decide_c8", decide, 1, 8, {"total": plan.decide_c8}),
        )
        for name, requests, size, concurrency, budget in phases:
            warmup = plan.warmup if size == 1 else plan.warmup_hundred
            run = measure(server, name, requests, size, concurrency, warmup=warmup, **budget)
            out["phases"][name] = summary(run)
            p = out["phases"][name]
            print(
                f"[{served.store}] {name}: {p['requests']} requests, {p['errors']} errors, {p['rate']} req/s, "
                f"p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms",
                flush=True,
            )
            if p["errors"]:
                print(f"  errors: {p['error_kinds']}\n{server.log_tail()}", flush=True)
    finally:
        server.stop()
    gc.unfreeze()
    ids = sets["hundred_ids"][: max(plan.feast_calls, 3)]
    out["feast"] = feast_reference(served.ws, ids, plan.feast_calls, served.settings)
    print(f"[{served.store}] feast reference: {out['feast']}", flush=True)
    return out


def run_benchmark(args: argparse.Namespace) -> dict:
    from cxpredict.workspace import resolve_workspace

    plan = QUICK if args.quick else Plan()
    stores = [name.strip() for name in args.stores.split(",") if name.strip()]
    unknown = sorted(set(stores) - set(STORES))
    if not stores or unknown or len(set(stores)) != len(stores):
        print(
            f"--stores takes distinct names among {', '.join(STORES)}, got {args.stores!r}", file=sys.stderr
        )
        raise SystemExit(2)
    ws = resolve_workspace(args.workspace)
    versions = champion_versions(ws) if ws.root.exists() else f"no workspace at {ws.root}"
    if isinstance(versions, str):
        print(
            f"{versions}: this benchmark serves trained champion models. Make them with `make demo` "
            f"(or `cxpredict demo --workspace {ws.root}`), then run it again.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    ports = [args.port + i for i in range(len(stores))]  # a stopped server's port may linger in TIME_WAIT
    if not all(map(free_port, ports)):
        print(f"a port of {ports} is in use: choose another with --port", file=sys.stderr)
        raise SystemExit(2)
    pool = customer_pool(ws)
    key = secrets.token_urlsafe(24)
    result: dict = {
        "machine": machine(),
        "command": " ".join([".venv/bin/python benchmarks/serving.py", *map(shlex.quote, sys.argv[1:])]),
        "workspace": str(ws.root),
        "customers": len(pool),
        "versions": versions,
        "plan": plan.__dict__,
        "quick": args.quick,
        "notes": args.note,
        "load_before": load_average(),
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "stores": {},
    }
    with tempfile.TemporaryDirectory(prefix="cxpredict-bench-serving-") as folder:
        for store, port in zip(stores, ports, strict=True):
            served = redis_copy(ws, Path(folder), args.redis) if store == "redis" else Served("sqlite", ws)
            sets = request_sets(pool, port, key)
            try:
                result["stores"][store] = serve_and_measure(served, args, port, plan, key, sets, Path(folder))
            finally:
                if store == "redis":
                    drop_redis_project(served)
    result["models"] = models_reference(ws, pool[:50], plan.models_calls)
    print(f"models reference: {result['models']}", flush=True)
    first = result["stores"][stores[0]]
    result.update({k: first[k] for k in ("phases", "feast", "workers", "startup_s", "features_as_of")})
    result["store"] = stores[0]
    result["load_after"] = load_average()
    result["measured"] = f"{result.pop('started')}–{datetime.now(UTC):%H:%M} UTC"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path(".cxpredict"))
    parser.add_argument("--port", type=int, default=3199)
    parser.add_argument(
        "--workers", type=int, default=min(os.cpu_count() or 1, 4), help="server worker processes"
    )
    parser.add_argument(
        "--stores", default="sqlite", help="online stores to serve from, in order: sqlite, redis or both"
    )
    parser.add_argument("--redis", default="127.0.0.1:6379", help="Redis server for --stores redis")
    parser.add_argument("--quick", action="store_true", help="shorten every phase (smoke run, no doc)")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--note", action="append", default=[], help="a sentence added under the tables")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import uvloop
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    result = run_benchmark(args)
    print(json.dumps(result, indent=2))
    print_report(result)
    if args.quick or args.no_doc:
        return
    write_section(OPEN, CLOSE, render(result))
    print(f"updated {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
