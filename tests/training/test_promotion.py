"""Champion/challenger gate, forced promotion, rollback, audit trail and model cards, end to end on a
real SQLite registry with models trained on the generated world (churn only, to stay fast).

The story, in one registry: a model trained on shuffled labels is registered first (no champion:
it does not beat the baselines), the gate refuses it, it is forced in with a reason; a real model
is then promoted over it; a second shuffled model is refused against the real champion; two
rollbacks walk the line of succession back; finally two processes race to promote two candidates.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import mlflow
import pytest
from rich.console import Console
from worlds import blank_database, shuffled_labels, with_profile, workspace_from

from shown import card_command, models_command, promote_command, rollback_command
from training.pipeline import build_dataset, fit_task
from training.promotion import PromotionError, evaluation_sets
from training.model_registry import alias_version, history_problems, read_history
from training.tracking import log_task, resolve_tracking

pytestmark = pytest.mark.slow
GATE = {"ece_bound": 0.05}  # ~3,000 evaluation rows: sampling noise alone is near the product's 0.02
CUSTOMER_ID = re.compile(r"C\d{7}")


def console() -> Console:
    return Console(file=io.StringIO(), width=200)


def text(out: Console) -> str:
    return out.file.getvalue()


@pytest.fixture(scope="module")
def fits(small_world, kit):
    features_for = with_profile(kit.features_for(small_world.tables))
    config = kit.config(tasks=("churn",))
    oracle = kit.oracle(small_world, kit.HORIZONS)
    dataset, needs = build_dataset("churn", small_world.tables, features_for, config, oracle)
    noise = shuffled_labels(dataset, seed=5)
    return SimpleNamespace(
        features_for=features_for,
        config=config,
        dataset=dataset,
        noise_dataset=noise,
        strong=fit_task("churn", dataset, needs, config),
        strong_again=fit_task("churn", dataset, needs, kit.config(tasks=("churn",), seed=1)),
        noise=fit_task("churn", noise, needs, config),
        evaluation_set=evaluation_sets(small_world.tables, features_for, kit.AS_OF),
    )


@pytest.fixture(scope="module")
def story(fits, tmp_path_factory):
    template = blank_database(tmp_path_factory.mktemp("template"))
    ws = workspace_from(template, tmp_path_factory.mktemp("ws"))
    target = resolve_tracking(ws)
    steps, outputs = {}, {}

    def log(fitted, dataset, hash_):
        return log_task(target, fitted, dataset, fits.config, hash_).model_version

    def promote(step, **options):
        out = console()
        steps[step] = promote_command(
            ws, "churn", evaluation_set=fits.evaluation_set, console=out, **GATE, **options
        )
        outputs[step] = text(out)

    def rollback(step):
        out = console()
        steps[step] = rollback_command(ws, "churn", actor="ops", console=out)
        outputs[step] = text(out)

    versions = {"noise": log(fits.noise, fits.noise_dataset, "noise")}
    promote("first_refused")
    promote("forced", force=True, reason="bootstrap: nothing beats the baselines yet", actor="ana")
    versions["strong"] = log(fits.strong, fits.dataset, "strong")
    promote("better")
    versions["noise_again"] = log(fits.noise, fits.noise_dataset, "noise")
    promote("shuffled_refused")
    rollback("rollback")
    rollback("rollback_again")
    return SimpleNamespace(ws=ws, target=target, steps=steps, outputs=outputs, versions=versions)


def client_of(story) -> mlflow.MlflowClient:
    uri = story.target.tracking_uri
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_given_no_champion_when_the_gate_sees_a_shuffled_label_model_then_it_refuses_and_nothing_moves(story):
    refused = story.steps["first_refused"]

    assert story.versions == {"noise": "1", "strong": "2", "noise_again": "3"}
    assert refused.exit_code == 1 and not refused.moved and refused.champion_after is None
    checks = {check.name: check for check in refused.checks}
    assert checks["AUC"].passed and "no champion" in checks["AUC"].requirement
    assert not checks["better than chance"].passed
    assert "refused" in story.outputs["first_refused"] and "FAIL" in story.outputs["first_refused"]
    assert refused.metrics["candidate"]["auc"] < 0.6


def test_given_force_with_a_reason_when_promoting_then_the_champion_moves_and_the_reason_is_recorded(story):
    forced = story.steps["forced"]

    assert forced.exit_code == 0 and forced.moved and forced.forced and not forced.gate_passed
    assert (forced.champion_before, forced.champion_after) == (None, "1")
    entry = next(e for e in read_history(client_of(story), "cx-churn") if e.action == "force")
    assert entry.reason == "bootstrap: nothing beats the baselines yet" and entry.actor == "ana"
    assert entry.forced and (entry.from_version, entry.to_version) == (None, "1")
    assert entry.details["gate_passed"] is False and entry.details["evaluation_cutoff"] == "2025-06-01"


def test_given_force_without_a_reason_when_promoting_then_it_is_rejected_before_anything_happens(story, fits):
    champion = alias_version(client_of(story), "cx-churn", "champion")

    with pytest.raises(PromotionError, match="--reason"):
        promote_command(story.ws, "churn", version="3", force=True, evaluation_set=fits.evaluation_set)

    assert alias_version(client_of(story), "cx-churn", "champion") == champion


def test_given_a_better_challenger_when_promoting_then_the_gate_accepts_it(story):
    better = story.steps["better"]

    assert better.exit_code == 0 and better.moved and better.gate_passed and not better.forced
    assert (better.candidate, better.champion_before, better.champion_after) == ("2", "1", "2")
    assert better.metrics["candidate"]["auc"] > better.metrics["champion"]["auc"] + 0.2
    assert all(check.passed for check in better.checks)
    assert "PASS" in story.outputs["better"] and "FAIL" not in story.outputs["better"]


def test_given_a_shuffled_label_challenger_when_promoting_over_a_real_champion_then_the_gate_refuses(story):
    refused = story.steps["shuffled_refused"]

    assert refused.exit_code == 1 and not refused.moved
    assert (refused.candidate, refused.champion_before, refused.champion_after) == ("3", "2", "2")
    failed = {check.name for check in refused.checks if not check.passed}
    assert "AUC" in failed
    assert {"label definition", "horizon (days)", "feature service", "held-out cutoff"}.isdisjoint(failed)
    table = story.outputs["shuffled_refused"]
    assert "candidate v3 vs champion v2 on cutoff 2025-06-01" in table
    assert re.search(r"AUC\s*│\s*0\.\d{4}\s*│\s*0\.9\d{3}", table)
    gate = json.loads(client_of(story).get_model_version("cx-churn", "3").tags["last_gate"])
    assert gate["passed"] is False and "AUC" in gate["failed"] and gate["champion"] == "2"


def test_given_promotions_when_rolling_back_then_the_previous_champion_returns_and_then_there_is_none(story):
    first, second = story.steps["rollback"], story.steps["rollback_again"]

    assert first.exit_code == 0 and (first.champion_before, first.champion_after) == ("2", "1")
    assert second.exit_code == 1 and not second.moved and "first recorded champion" in second.decision
    assert alias_version(client_of(story), "cx-churn", "champion") == "1"


def test_given_the_story_when_reading_the_history_then_every_move_is_recorded_in_order(story):
    client = client_of(story)
    history = read_history(client, "cx-churn")

    champion = [(e.action, e.from_version, e.to_version) for e in history if e.alias == "champion"]
    assert champion == [("force", None, "1"), ("promote", "1", "2"), ("rollback", "2", "1")]
    challenger = [(e.from_version, e.to_version) for e in history if e.alias == "challenger"]
    assert challenger == [(None, "1"), ("1", "2"), ("2", "3")]
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert all(e.at.endswith("+00:00") for e in history)
    rollback_entry = history[-1]
    assert rollback_entry.actor == "ops" and rollback_entry.action == "rollback"
    assert history_problems(history, {"champion": "1", "challenger": "3"}) == []


def test_given_the_story_when_listing_models_with_history_then_the_table_shows_versions_and_moves(
    story, fits
):
    out = console()

    data = models_command(story.ws, history=True, console=out)

    churn = next(task for task in data["tasks"] if task["task"] == "churn")
    assert churn["aliases"] == {"champion": "1", "challenger": "3"}
    rows = {row["version"]: row for row in churn["versions"]}
    assert rows["2"]["auc"] > 0.9 and rows["1"]["auc"] < 0.65
    assert rows["2"]["rows_train"] == len(fits.dataset.train) and rows["2"]["as_of"].startswith("2025-09-01")
    assert rows["2"]["feature_service"] == "churn" and "profile_age" in rows["2"]["features"]
    assert rows["2"]["cutoff_test"] == "2025-06-01" and rows["2"]["data_hash"] == "strong"
    printed = text(out)
    assert "bootstrap: nothing beats the baselines yet" in printed and "rollback" in printed


def test_given_registered_versions_then_each_has_a_model_card_with_slices_and_no_identifiers(story):
    card = card_command(story.ws, "churn", "2")

    assert card.startswith("# Model card: cx-churn version 2")
    for dimension in ("| region |", "| age band |", "| acquisition channel |"):
        assert dimension in card
    assert "**Largest gap (flagged):**" in card and "| churn | oracle |" in card
    assert "`profile_acquisition_channel`" in card and "2025-06-01" in card
    assert not CUSTOMER_ID.search(card)
    tag = client_of(story).get_model_version("cx-churn", "2").tags["model_card"]
    assert tag.endswith("/model_card.md")


def test_given_gate_evaluations_when_scanning_what_they_logged_then_no_customer_identifier_appears(story):
    client = client_of(story)
    experiment = client.get_experiment_by_name("cx-churn").experiment_id
    runs = client.search_runs([experiment], "tags.`cxpredict.kind` = 'promotion'")
    files = [path for path in (story.ws.mlflow_dir / "artifacts").rglob("*") if path.is_file()]
    registry_text = json.dumps([e.model_dump() for e in read_history(client, "cx-churn")])

    assert len(runs) == 4 and all("candidate.churn.auc" in run.data.metrics for run in runs)
    assert {"gate.json"} <= {item.path for run in runs for item in client.list_artifacts(run.info.run_id)}
    for path in files:
        if path.suffix in {".json", ".md", ".txt", ".csv", ""}:
            assert not CUSTOMER_ID.search(path.read_text(errors="ignore")), path
    for run in runs:
        assert not CUSTOMER_ID.search(json.dumps(run.data.tags))
    assert not CUSTOMER_ID.search(registry_text)


RACER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import pandas as pd
    from cxpredict.workspace import resolve_workspace
    from training.commands import promote_command
    from training.promotion import EvaluationSet, GateConfig

    ws, version, folder = resolve_workspace(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    meta = json.loads((folder / "meta.json").read_text())
    evaluation = EvaluationSet(
        task="churn", cutoff=pd.Timestamp(meta["cutoff"]), horizon_days=meta["horizon"],
        as_of=pd.Timestamp(meta["as_of"]), features=pd.read_parquet(folder / "features.parquet"),
        labels=pd.read_parquet(folder / "labels.parquet"),
    )
    (folder / f"ready-{version}").touch()
    while not (folder / "go").exists():
        time.sleep(0.01)
    result = promote_command(
        ws, "churn", version=version, gate=GateConfig(ece_bound=0.05), actor=f"racer-{version}",
        evaluation_set=lambda task, horizon: evaluation,
    )
    moved = {"moved": result.moved, "before": result.champion_before, "after": result.champion_after}
    print(json.dumps(moved))
    """
)


@pytest.fixture(scope="module")
def race(story, fits, tmp_path_factory):
    """Two processes, this one and a child, promote versions 2 and 4 (two real models) at the same
    moment (champion: version 1)."""
    v2 = story.versions["strong"]
    v4 = log_task(story.target, fits.strong_again, fits.dataset, fits.config, "strong-1").model_version
    folder = tmp_path_factory.mktemp("race")
    evaluation = fits.evaluation_set("churn", 90)
    evaluation.features.to_parquet(folder / "features.parquet")
    evaluation.labels.to_parquet(folder / "labels.parquet")
    meta = {"cutoff": evaluation.cutoff.isoformat(), "as_of": evaluation.as_of.isoformat(), "horizon": 90}
    (folder / "meta.json").write_text(json.dumps(meta))
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("MLFLOW_TRACKING_URI", None)
    before = len(read_history(client_of(story), "cx-churn"))
    with open(folder / "child.log", "w") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", RACER, str(story.ws.root), v4, str(folder)],
            cwd=folder, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while not (folder / f"ready-{v4}").exists():
            alive = time.monotonic() < deadline and child.poll() is None
            assert alive, (folder / "child.log").read_text()[-3000:]
            time.sleep(0.02)
        (folder / "go").touch()
        mine = promote_command(
            story.ws, "churn", version=v2, actor="racer-here", evaluation_set=fits.evaluation_set,
            console=console(), **GATE,
        )  # fmt: skip
        stdout, _ = child.communicate(timeout=120)
    assert child.returncode == 0, (folder / "child.log").read_text()[-3000:]
    results = [
        {"moved": mine.moved, "before": mine.champion_before, "after": mine.champion_after},
        json.loads(stdout.strip().splitlines()[-1]),
    ]
    return SimpleNamespace(versions=(v2, v4), results=results, before=before)


def test_given_two_racing_promotions_then_each_move_starts_where_the_last_ended(story, race):
    client = client_of(story)
    history = read_history(client, "cx-churn")
    new = [e for e in history[race.before :] if e.alias == "champion"]
    champion = alias_version(client, "cx-churn", "champion")

    moved = [result for result in race.results if result["moved"]]
    assert len(moved) >= 1 and len(new) == len(moved)
    assert new[0].from_version == "1"
    assert [e.from_version for e in new[1:]] == [e.to_version for e in new[:-1]]
    assert champion == new[-1].to_version and champion in race.versions
    assert sorted(result["before"] for result in moved) == sorted(e.from_version for e in new)
    assert history_problems(history, {"champion": champion, "challenger": race.versions[1]}) == []
    runs = client.search_runs(
        [client.get_experiment_by_name("cx-churn").experiment_id], "tags.`cxpredict.kind` = 'promotion'"
    )
    assert len(runs) >= 4 + len(race.results)  # every gate evaluation left its run
    assert not client.search_registered_models("name LIKE '%.lock'")
