"""Benchmark the uplift task on generated worlds with a campaign history: Qini per action against
random and risk targeting and the oracle, the true gain of each ranking against the oracle's, and
the off-policy value of the model's policy against the logging policy and the oracle's best.

    .venv/bin/python benchmarks/uplift.py                          # 20,000 (seed 3) and 5,000 (seed 7)
    .venv/bin/python benchmarks/uplift.py --worlds 5000:3

Each world is generated (730 days to 2026-12-01, 12 monthly waves), ingested and featurised under
/tmp (reused when present), then ``train uplift`` runs as of 2026-12-01 with a fresh registry.
Prints JSON and rewrites the ``<!-- uplift -->`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import machine, write_section  # noqa: E402

OPEN, CLOSE = "<!-- uplift -->", "<!-- /uplift -->"
END = date(2026, 12, 1)
AS_OF = datetime(2026, 12, 1, tzinfo=UTC)
ACTIONS = ("retention_offer", "service_recovery_callback", "cross_sell", "win_back")


def prepare(workspace: Path, customers: int, seed: int) -> dict:
    from cxpredict.workspace import resolve_workspace
    from features.ingest import ingest
    from features.snapshots import build_features
    from features.store import apply_repo
    from features.synthetic import CampaignHistory, WorldConfig, generate

    ws = resolve_workspace(workspace).ensure()
    marks: dict[str, float] = {}
    if not (ws.features_dir / "manifest.json").exists():
        began = time.perf_counter()
        generate(ws, WorldConfig(customers=customers, seed=seed, end=END, campaign_history=CampaignHistory()))
        marks["generate_s"] = round(time.perf_counter() - began, 1)
        began = time.perf_counter()
        ingest(ws)
        build_features(ws, AS_OF)
        apply_repo(ws)
        marks["ingest_features_s"] = round(time.perf_counter() - began, 1)
    return marks


def measure(workspace: Path, customers: int, seed: int) -> dict:
    import warnings

    import features.store  # noqa: F401  (Feast resets warning filters on import)

    warnings.filterwarnings("ignore")
    from cxpredict.workspace import resolve_workspace
    from training.run import train_workspace

    marks = prepare(workspace, customers, seed)
    ws = resolve_workspace(workspace)
    shutil.rmtree(ws.mlflow_dir, ignore_errors=True)
    began = time.perf_counter()
    result = train_workspace(ws, tasks=["uplift"], as_of=AS_OF)["uplift"]
    marks["train_s"] = round(time.perf_counter() - began, 1)
    rows = result.metrics

    def value(target: str, model: str, metric: str) -> float:
        hit = rows[(rows.target == target) & (rows.model == model) & (rows.metric == metric)]
        return round(float(hit["value"].iloc[0]), 4) if len(hit) else float("nan")

    actions = {
        action: {
            name: {
                "qini": value(action, name, "qini"),
                "qini_low": value(action, name, "qini_low"),
                "qini_high": value(action, name, "qini_high"),
                "true_gain_ratio": value(action, name, "true_gain_ratio_to_oracle"),
            }
            for name in ("model", "risk_targeting", "oracle")
        }
        | {
            "treated_rows": value(action, "model", "treated_rows"),
            "true_uplift": value(action, "model", "true_uplift"),
        }
        for action in ACTIONS
    }
    policy = {
        metric: value("policy", "model", metric)
        for metric in (
            "ope_ipw",
            "ope_ipw_low",
            "ope_ipw_high",
            "ope_dr",
            "ope_dr_low",
            "ope_dr_high",
            "logging_value",
            "true_value",
            "true_logging_value",
            "true_oracle_value",
        )  # fmt: skip
    }
    return {"customers": customers, "seed": seed, "champion": result.champion, "decision": result.decision,
            "seconds": marks, "actions": actions, "policy": policy}  # fmt: skip


def section(results: list[dict], command: str) -> str:
    host = machine()
    lines = [
        OPEN,
        "## Uplift (generated worlds with a campaign history)",
        "",
        f"Command: `{command}`; machine: {host.get('cpu', '?')}, {host.get('cpus', '?')} cores; "
        "other work was running on the machine (figures are quality, not speed).",
        "",
        "Qini (scikit-uplift, normalised) on the held-out wave, treated rows of the action vs control, 95 % "
        "bootstrap interval; *true gain* = cumulative true uplift of targeting in the ranking's order above "
        "random, as a share of the oracle ranking's (every customer of the wave, noise-free).",
        "",
        "| world | action | treated | true mean uplift | Qini model [95 %] | Qini risk targeting | Qini oracle "
        "| true gain model | true gain risk targeting |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        world = f"{r['customers']:,} (seed {r['seed']})"
        for action, found in r["actions"].items():
            m, k, o = found["model"], found["risk_targeting"], found["oracle"]
            lines.append(
                f"| {world} | {action} | {found['treated_rows']:.0f} | {found['true_uplift']:.3f} | "
                f"{m['qini']:.3f} [{m['qini_low']:.3f}, {m['qini_high']:.3f}] | {k['qini']:.3f} | {o['qini']:.3f} | "
                f"{m['true_gain_ratio']:.2f} | {k['true_gain_ratio']:.2f} |"
            )
    lines += [
        "",
        "Policy value (purchase rate within 28 days) of the model's policy (the action of largest predicted "
        "uplift when positive, else none), off-policy from the logged (randomised) decisions, vs the logging "
        "policy and the truth:",
        "",
        "| world | IPW [95 %] | DR [95 %] | logging policy (observed) | true value | true logging | "
        "true oracle best | champion | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        p = r["policy"]
        lines.append(
            f"| {r['customers']:,} (seed {r['seed']}) | {p['ope_ipw']:.4f} [{p['ope_ipw_low']:.4f}, "
            f"{p['ope_ipw_high']:.4f}] | {p['ope_dr']:.4f} [{p['ope_dr_low']:.4f}, {p['ope_dr_high']:.4f}] | "
            f"{p['logging_value']:.4f} | {p['true_value']:.4f} | {p['true_logging_value']:.4f} | "
            f"{p['true_oracle_value']:.4f} | {'yes' if r['champion'] else 'no'} | {r['seconds']['train_s']} |"
        )
    lines += ["", CLOSE]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="20000:3,5000:7", help="customers:seed, comma-separated")
    parser.add_argument("--root", default="/tmp/cxpredict-bench-uplift")
    args = parser.parse_args()
    results = []
    for spec in args.worlds.split(","):
        customers, seed = (int(part) for part in spec.split(":"))
        results.append(measure(Path(args.root) / f"w{customers}s{seed}", customers, seed))
        print(json.dumps(results[-1], indent=1), flush=True)
    command = "python benchmarks/uplift.py" + (
        f" --worlds {args.worlds}" if args.worlds != "20000:3,5000:7" else ""
    )
    write_section(OPEN, CLOSE, section(results, command))


if __name__ == "__main__":
    main()
