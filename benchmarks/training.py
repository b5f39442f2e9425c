"""Benchmark training and batch scoring: ``train all`` on 100,000 customers x 6 cutoffs (target
<= 5 min) with the quality table (model vs baselines vs oracle), and ``score`` (target: 1,000,000
customers <= 2 min).

    .venv/bin/python benchmarks/training.py                       # 100k world under /tmp, reused
    .venv/bin/python benchmarks/training.py --million              # and score 1M customers

Phases run as child processes so each peak RSS is its own: ``prepare`` (generate, ingest, features;
skipped when the workspace already has features), ``train`` (``training.run.train_workspace``:
canonical tables as of the date, Feast point-in-time features, LightGBM, MLflow logging and
registry, the oracle for evaluation), ``score`` (``training.scoring.score_workspace``). Prints JSON and
rewrites the ``<!-- training -->`` section of docs/benchmarks.md (other sections kept).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import DOC, cpu_seconds, generated_world, machine, peak_rss_mib, run_phase, write_section  # noqa: E402

OPEN, CLOSE = "<!-- training -->", "<!-- /training -->"
END = date(2026, 11, 1)
AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
TRAIN_TARGET_S, SCORE_TARGET_S = 300.0, 120.0


# --------------------------------------------------------------------------- phases (child processes)


def phase_prepare(workspace: Path, customers: int) -> dict:
    _, marks = generated_world(workspace, customers, END, AS_OF)
    return {**marks, "peak_rss_mib": peak_rss_mib()}


def phase_train(workspace: Path) -> dict:
    import warnings

    import features.store  # noqa: F401  (Feast resets warning filters on import)

    warnings.filterwarnings("ignore")
    from cxpredict.workspace import resolve_workspace
    from training import run
    from training.metrics import summary_table

    ws = resolve_workspace(workspace)
    shutil.rmtree(ws.mlflow_dir, ignore_errors=True)  # a fresh registry: version 1 of each model
    oracle_seconds = [0.0]
    adapter = run.truth_oracle_for

    def timed_oracle(*args, **kwargs):
        oracle = adapter(*args, **kwargs)
        if oracle is None:
            return None

        def wrapped(entity_df, task):
            began = time.perf_counter()
            try:
                return oracle(entity_df, task)
            finally:
                oracle_seconds[0] += time.perf_counter() - began

        return wrapped

    run.truth_oracle_for = timed_oracle
    marks: list[tuple[str, float]] = []
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    results = run.train_workspace(
        ws,
        as_of=AS_OF,
        progress=lambda stage, done, total, note="": (
            note and marks.append((note, round(time.perf_counter() - began, 1)))
        ),
    )
    seconds = time.perf_counter() - began
    quality = {}
    rows = {}
    for task, result in results.items():
        if result.status != "trained":
            quality[task] = {"status": result.status, "reason": result.reason}
            continue
        table = summary_table(result.metrics)
        quality[task] = {model: {k: float(v) for k, v in row.items()} for model, row in table.iterrows()}
        rows[task] = {split: len(result.dataset.split(split)) for split in ("train", "valid", "test")}
        quality[task]["_version"] = result.model_version
        quality[task]["_champion"] = result.champion
    return {
        "seconds": round(seconds, 1),
        "oracle_seconds": round(oracle_seconds[0], 1),
        "cpu_seconds": cpu_seconds(),
        "peak_rss_mib": peak_rss_mib(),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "marks": marks,
        "rows": rows,
        "quality": quality,
    }


def phase_score(workspace: Path, tracking: Path | None) -> dict:
    import warnings

    import features.store  # noqa: F401

    warnings.filterwarnings("ignore")
    from cxpredict.workspace import resolve_workspace
    from training.scoring import score_workspace
    from training.tracking import resolve_tracking

    ws = resolve_workspace(workspace)
    out = ws.reports_dir / "bench-scores.parquet"
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    summary = score_workspace(
        ws,
        None,
        out,
        tracking_uri=resolve_tracking(resolve_workspace(tracking)).tracking_uri if tracking else None,
    )
    seconds = time.perf_counter() - began
    size = out.stat().st_size
    out.unlink()
    return {
        "customers": summary.customers,
        "seconds": round(seconds, 1),
        "cpu_seconds": cpu_seconds(),
        "peak_rss_mib": peak_rss_mib(),
        "file_mib": round(size / 2**20, 1),
        "columns": len(summary.columns),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def prepare_million(source: Path, workspace: Path, copies: int = 10) -> int:
    """A 1,000,000-customer scoring workspace: the featurised world at ``source`` replicated
    ``copies`` times with distinct ids (``<id>-<k>``), written by DuckDB.

    Canonical sources keep only what scoring reads (ids, times, consent purpose/state); every
    feature snapshot file is replicated, so the point-in-time join scans as many snapshots as a
    real world has. Returns the number of customers in the latest snapshot.
    """
    import duckdb

    from cxpredict.workspace import resolve_workspace
    from features.catalog import canonical_manifest, current_version
    from features.store import apply_repo
    from training.labels import TIME_COLUMNS

    origin = resolve_workspace(source)
    ws = resolve_workspace(workspace).ensure()
    if (ws.features_dir / "manifest.json").exists():
        apply_repo(ws)
        return 0
    manifest = canonical_manifest(origin)
    version = ws.root / ".canonical-versions" / "replicated"
    version.mkdir(parents=True, exist_ok=True)
    listed = {}
    with duckdb.connect(config={"threads": 2}) as con:
        con.execute("SET TimeZone = 'UTC'")
        for name, entry in manifest.sources.items():
            columns = [
                "customer_id",
                TIME_COLUMNS[name],
                *(["purpose", "granted"] if name == "consents" else []),
            ]
            columns = [c for c in columns if c in entry.columns_supplied]
            rest = "".join(f", {c}" for c in columns[1:])
            src = current_version(origin) / f"{name}.parquet"
            con.execute(
                f"COPY (SELECT customer_id || '-' || k AS customer_id{rest} FROM read_parquet('{src}'), "
                f"range({copies}) t(k)) TO '{version / f'{name}.parquet'}' (FORMAT parquet)"
            )
            listed[name] = {"rows": entry.rows * copies, "columns_supplied": columns}
        (version / "manifest.json").write_text(
            json.dumps(
                {
                    "version": "replicated",
                    "created_at": datetime.now(UTC).isoformat(),
                    "sources": listed,
                }
            )
        )
        ws.canonical_dir.symlink_to(Path(".canonical-versions") / "replicated", target_is_directory=True)
        for path in sorted(origin.features_dir.glob("*/snapshot_date=*/data.parquet")):
            target = ws.features_dir / path.relative_to(origin.features_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            con.execute(
                f"COPY (SELECT * REPLACE (customer_id || '-' || k AS customer_id) FROM read_parquet('{path}'), "
                f"range({copies}) t(k)) TO '{target}' (FORMAT parquet, COMPRESSION zstd)"
            )
        shutil.copy(origin.features_dir / "manifest.json", ws.features_dir / "manifest.json")
        latest = max(ws.features_dir.glob("purchase/snapshot_date=*/data.parquet"))
        customers = con.execute(f"SELECT count(*) FROM read_parquet('{latest}')").fetchone()[0]
    apply_repo(ws)
    return int(customers)


# --------------------------------------------------------------------------- report


def _f(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def render(result: dict) -> str:
    host, train, customers = result["machine"], result["train"], result["customers"]
    lines = [
        OPEN,
        "## Training and batch scoring (`cxpredict train all`, `cxpredict score`)",
        "",
        f"Machine: {host['cpus']} CPUs ({host['cpu']}), {host['memory']} RAM, Python {host['python']}; "
        "shared with other workers (load average before/after shown). LightGBM on 2 threads, "
        "`OMP_WAIT_POLICY=PASSIVE`.",
        "",
        "Command: `"
        + result.get(
            "command",
            ".venv/bin/python benchmarks/training.py" + (" --million" if result.get("million") else ""),
        )
        + f"` — generated world of {customers:,} customers, 730 days to {END}, seed 1; "
        f"`train all --as-of {AS_OF:%Y-%m-%d}` (6 monthly cutoffs per task: 4 train, 1 validation, "
        "1 held-out evaluation); measured " + result["measured"] + ".",
        "",
        "| step | wall | target | CPU | peak RSS | load before/after |",
        "|---|---:|---:|---:|---:|---:|",
        f"| train all ({customers:,} customers × 6 cutoffs, {len(train['quality'])} tasks, MLflow logging) | {train['seconds']:.1f} s | "
        f"≤ {TRAIN_TARGET_S:.0f} s | {train['cpu_seconds']:.0f} s | {train['peak_rss_mib']:,} MiB | "
        f"{train['load_before']} / {train['load_after']} |",
    ]
    for key, label in (("score", f"score {customers:,} customers"), ("million", "score 1,000,000 customers")):
        if result.get(key):
            s = result[key]
            target = f"≤ {SCORE_TARGET_S:.0f} s" if key == "million" else "—"
            lines.append(
                f"| {label} ({s['customers']:,} rows, {s['columns']} columns) | {s['seconds']:.1f} s | {target} | "
                f"{s['cpu_seconds']:.0f} s | {s['peak_rss_mib']:,} MiB | {s['load_before']} / {s['load_after']} |"
            )
    lines += [
        "",
        f"Of the training time, {train['oracle_seconds']:.1f} s is the generator's oracle (evaluation only; "
        "absent on real data). Steps (cumulative seconds): "
        + ", ".join(
            f"{message} {at}"
            for message, at in train["marks"]
            if message.endswith(("features", "fitting", "MLflow", "done"))
        )
        + ".",
        "",
        "Quality on the held-out cutoff (AUC and ECE are means over binary targets; for unmet needs, over the needs):",
        "",
        "| task | rows train / valid / test | model AUC | heuristic AUC | logistic AUC | oracle AUC | model/oracle | "
        "model ECE | bars (≥ 0.95 × oracle, ≥ heuristic + 0.03, ≥ logistic, ECE ≤ 0.02) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    continuous = {}
    for task, quality in train["quality"].items():
        if "model" not in quality:
            lines.append(f"| {task} | — | not trained: {quality.get('reason')} | | | | | | |")
            continue
        if "gini" in quality["model"]:
            continuous[task] = quality
            continue
        get = lambda model, metric: quality.get(model, {}).get(metric)  # noqa: E731
        model, oracle = get("model", "auc"), get("oracle", "auc")
        heuristic, logistic, ece = get("rf_heuristic", "auc"), get("logistic", "auc"), get("model", "ece")
        bars = [
            ("oracle", oracle is not None and model >= 0.95 * oracle),
            ("heuristic", heuristic is not None and model >= heuristic + 0.03),
            ("logistic", logistic is not None and model >= logistic),
            ("ECE", ece is not None and ece <= 0.02),
        ]
        verdict = ", ".join(f"{name} {'met' if ok else '**not met**'}" for name, ok in bars)
        r = train["rows"][task]
        lines.append(
            f"| {task} | {r['train']:,} / {r['valid']:,} / {r['test']:,} | {_f(model)} | {_f(heuristic)} | "
            f"{_f(logistic)} | {_f(oracle)} | {_f(model / oracle if oracle else None, 3)} | {_f(ece)} | {verdict} |"
        )
    if continuous:
        lines += [
            "",
            "Continuous targets (value: net spend in the horizon) on the held-out cutoff — normalised Gini "
            "(1 = the biggest spenders first), MAE and the relative error of the predicted total:",
            "",
            "| task | rows train / valid / test | model Gini | run-rate Gini | BG/NBD × Gamma-Gamma Gini | "
            "model MAE | run-rate MAE | model total error | bars (Gini above both baselines, MAE below the run rate) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
    for task, quality in continuous.items():
        get = lambda model, metric: quality.get(model, {}).get(metric)  # noqa: E731
        gini, rate, btyd = get("model", "gini"), get("run_rate", "gini"), get("btyd", "gini")
        bars = [
            ("run rate", rate is not None and gini > rate),
            ("BG/NBD", btyd is not None and gini > btyd),
            ("MAE", get("run_rate", "mae") is not None and get("model", "mae") < get("run_rate", "mae")),
        ]
        verdict = ", ".join(f"{name} {'met' if ok else '**not met**'}" for name, ok in bars)
        r = train["rows"][task]
        lines.append(
            f"| {task} | {r['train']:,} / {r['valid']:,} / {r['test']:,} | {_f(gini)} | {_f(rate)} | {_f(btyd)} | "
            f"{_f(get('model', 'mae'), 2)} | {_f(get('run_rate', 'mae'), 2)} | {_f(get('model', 'total_error'))} | "
            f"{verdict} |"
        )
    if result.get("million"):
        lines += [
            "",
            "The 1,000,000-customer scoring world is the 100,000-customer world replicated 10× with "
            "distinct ids (same feature schema and 13 monthly snapshots per family; canonical ids, times "
            "and consents replicated), scored with the champions trained above.",
        ]
    for note in result.get("notes", []):
        lines += ["", note]
    lines += ["", CLOSE]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/cxpredict-bench-training/ws100k"))
    parser.add_argument(
        "--million",
        action="store_true",
        help="also score 1,000,000 customers: the world replicated 10x with distinct ids",
    )
    parser.add_argument("--million-workspace", type=Path, default=Path("/tmp/cxpredict-bench-training/ws1m"))
    parser.add_argument("--note", action="append", default=[], help="a sentence added under the tables")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        help="rewrite the doc section from a saved JSON result (this script's output) instead of running",
    )
    parser.add_argument("--phase", choices=["prepare", "train", "score"], help=argparse.SUPPRESS)
    parser.add_argument("--tracking", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        handlers = {
            "prepare": lambda: phase_prepare(args.workspace, args.customers),
            "train": lambda: phase_train(args.workspace),
            "score": lambda: phase_score(args.workspace, args.tracking),
        }
        print(json.dumps(handlers[args.phase]()))
        return

    if args.render:
        saved = json.loads(args.render.read_text())
        saved["notes"] = args.note or saved.get("notes", [])
        write_section(OPEN, CLOSE, render(saved))
        print(f"updated {DOC.relative_to(ROOT)}")
        return
    shown = [arg for arg in sys.argv[1:] if arg not in args.note and arg != "--note"]
    command = " ".join([".venv/bin/python benchmarks/training.py", *shown])
    result: dict = {"machine": machine(), "customers": args.customers, "notes": args.note, "command": command}
    if not (args.workspace / "features" / "manifest.json").exists():
        result["prepare"] = run_phase(
            __file__,
            "--phase",
            "prepare",
            "--workspace",
            str(args.workspace),
            "--customers",
            str(args.customers),
        )
        print("prepared", result["prepare"], flush=True)
    result["train"] = run_phase(__file__, "--phase", "train", "--workspace", str(args.workspace))
    print("trained", json.dumps(result["train"]), flush=True)
    result["score"] = run_phase(__file__, "--phase", "score", "--workspace", str(args.workspace))
    print("scored", result["score"], flush=True)
    if args.million:
        began = time.perf_counter()
        prepare_million(
            args.workspace, args.million_workspace, copies=max(1, round(1_000_000 / args.customers))
        )
        print("replicated to 1M in", round(time.perf_counter() - began, 1), "s", flush=True)
        result["million"] = run_phase(
            __file__,
            "--phase",
            "score",
            "--workspace",
            str(args.million_workspace),
            "--tracking",
            str(args.workspace),
        )
        print("scored 1M", result["million"], flush=True)
    result["measured"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(json.dumps(result, indent=2))
    if not args.no_doc:
        write_section(OPEN, CLOSE, render(result))
        print(f"updated {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
