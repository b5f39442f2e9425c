"""MLflow conventions of a trained workspace: each run names its training data as an input dataset
(digest, schema, source; no rows, no customer ids), each registered version carries its model card
as description, the ROC plot's legend gives the AUC, and a run spans the fitting it reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import pytest

from training import plots
from training.tracking import DESCRIPTION_LIMIT, MODEL_CARD, TRAINING_CONTEXT, version_description

CUSTOMER_ID = re.compile(r"C\d{7}")

pytestmark = pytest.mark.slow  # reads the session's trained world


@pytest.fixture(scope="module")
def trained(trained_world):
    """``(workspace, client, {task: TrainResult})`` of the tasks trained and registered (read-only)."""
    world, results = trained_world
    uri = world.ws.tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    done = {task: result for task, result in results.items() if result.model_version}
    assert done, "the trained world registered no version"
    return world.ws, client, done


def _training_input(client, run_id):
    inputs = client.get_run(run_id).inputs.dataset_inputs
    return [
        found.dataset
        for found in inputs
        if any(tag.key == "mlflow.data.context" and tag.value == TRAINING_CONTEXT for tag in found.tags)
    ]


def test_given_a_trained_task_then_its_run_names_the_training_data_without_rows_or_ids(trained):
    ws, client, results = trained
    for task, result in results.items():
        [dataset] = _training_input(client, result.run_id)
        version = client.get_model_version(result.model_name, result.model_version)

        assert dataset.digest == version.tags["data_hash"], task
        columns = [column["name"] for column in json.loads(dataset.schema)["mlflow_colspec"]]
        assert columns == [*result.dataset.feature_names, *result.dataset.label_columns], task
        assert "customer_id" not in columns
        profile = json.loads(dataset.profile)
        assert profile["rows_train"] == len(result.dataset.train), task
        assert profile["feature_service"] == version.tags["feature_service"]
        assert dataset.source_type == "local"
        assert json.loads(dataset.source)["uri"] == (ws.features_dir / "manifest.json").as_uri()
        text = " ".join([dataset.name, dataset.source, dataset.schema, dataset.profile])
        assert not CUSTOMER_ID.search(text), task


def test_given_a_registered_version_then_its_description_is_its_model_card(trained, tmp_path):
    _, client, results = trained
    for task, result in results.items():
        version = client.get_model_version(result.model_name, result.model_version)
        folder = tmp_path / task
        folder.mkdir()
        card = Path(client.download_artifacts(result.run_id, MODEL_CARD, str(folder))).read_text()

        title = f"# Model card: {result.model_name} version {result.model_version}"
        assert card.splitlines()[0] == title
        assert version.description.splitlines()[0] == title, task
        assert len(version.description) <= DESCRIPTION_LIMIT
        if len(card) <= DESCRIPTION_LIMIT:
            assert version.description == card
        else:
            kept = version.description.rsplit("\n\n", 1)[0]
            assert card.startswith(kept) and MODEL_CARD in version.description


def test_given_held_out_evaluations_then_every_roc_curve_is_labelled_with_its_auc(trained):
    _, _, results = trained
    binary = {task: result for task, result in results.items() if result.fitted.evaluations}
    assert binary, "the binary tasks have held-out evaluations"
    for task, result in binary.items():
        legend = plots.roc(result.fitted.evaluations).axes[0].get_legend()

        labels = [text.get_text() for text in legend.get_texts()]
        assert labels and all(re.search(r"AUC 0\.\d{3}", label) for label in labels), (task, labels)


def test_given_a_trained_task_then_its_run_spans_the_fit(trained):
    _, client, results = trained
    for task, result in results.items():
        run = client.get_run(result.run_id)

        fit_seconds = run.data.metrics["fit_seconds"]
        assert fit_seconds > 0, task
        assert (run.info.end_time - run.info.start_time) / 1000 >= fit_seconds, task


@pytest.mark.parametrize("rows", [3, 400])
def test_given_a_card_when_made_a_description_then_it_fits_the_registry_and_starts_with_the_title(rows):
    card = "# Model card: cx-churn version 3\n\n" + "".join(
        f"| slice {n} | 0.8{n % 10} |\n" for n in range(rows)
    )

    description = version_description(card, "abc123")

    assert description.startswith("# Model card: cx-churn version 3\n")
    assert len(description) <= DESCRIPTION_LIMIT
    if len(card) <= DESCRIPTION_LIMIT:
        assert description == card
    else:
        assert card.startswith(description.split("\n\n(Cut")[0])
        assert description.endswith(f"runs:/abc123/{MODEL_CARD}.)\n")
