"""The house rules that keep the code easy to extend, checked on the source itself.

- Feast internals: one module (``features.feast_internals``) imports Feast names outside its
  public API.
- Layers: the ground floor (``cxpredict.workspace``, ``cxpredict.tasks``, ``cxpredict.progress``)
  imports nothing of the product; ``features`` nothing of ``training`` or ``serving``; ``training``
  nothing of ``serving``; nothing below the command line imports it or its renderer.
- One home per task: no product module but the registry and the task's own implementation module
  names a task (a task is added by one module plus one registry entry, nothing else).
- Cheap to import where it counts: the API's service module is imported by BentoML's supervisor and
  again by every worker before it can serve, and neither needs Feast or matplotlib at import time.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

from cxpredict import tasks as registry

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cxpredict", "features", "training", "serving")
GROUND = ("cxpredict/workspace.py", "cxpredict/tasks.py", "cxpredict/progress.py", "cxpredict/__init__.py")
TOP = ("cxpredict.cli", "cxpredict.render")
WORLD = ROOT / "features" / "synthetic"
"""The generated world says who churns in its own truth (a fact of the world, not a task); each task's
``oracle`` maps that truth to its labels."""
FORBIDDEN = {
    "features": ("training", "serving", *TOP),
    "training": ("serving", *TOP),
    "serving": TOP,
}


def product_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("path", product_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_given_a_product_module_then_it_imports_nothing_from_a_layer_above_it(path):
    relative = path.relative_to(ROOT).as_posix()
    names = imported(path)
    if relative in GROUND:
        above = [n for n in names if any(_under(n, p) for p in ("features", "training", "serving", *TOP))]
    else:
        top = relative.split("/")[0]
        above = [n for n in names if any(_under(n, p) for p in FORBIDDEN.get(top, ()))]
    assert not above, f"{relative} imports {sorted(above)} from a layer above it"


COMMON_WORDS = {"value"}
"""Task names that are also ordinary words of the code (every ``value`` variable, the metrics tables'
``value`` column): such a task is recognised by its model name only."""


def _task_words() -> dict[str, set[str]]:
    """Per task, the words that name it: code name, command-line name and model name."""
    return {
        spec.name: {spec.model_name}
        if spec.name in COMMON_WORDS
        else {spec.name, spec.cli_name, spec.model_name}
        for spec in registry.all_tasks()
    }


def _strings_and_names(path: Path) -> list[tuple[int, str]]:
    found = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type == tokenize.STRING:
            try:
                found.append((token.start[0], str(ast.literal_eval(token.string))))
            except (ValueError, SyntaxError):  # f-strings: their literal parts still count
                found.append((token.start[0], token.string))
        elif token.type in (tokenize.NAME, tokenize.COMMENT):
            found.append((token.start[0], token.string))
    return found


@pytest.mark.parametrize("task", registry.names())
def test_given_the_product_code_then_only_the_registry_and_the_task_module_name_the_task(task):
    words = _task_words()[task]
    allowed = {
        ROOT / "cxpredict" / "tasks.py",
        ROOT / (registry.get(task).implementation.replace(".", "/") + ".py"),
    }
    offenders = []
    for path in product_files():
        if path in allowed or (path.is_relative_to(WORLD) and "_" not in task):
            continue
        for line, text in _strings_and_names(path):
            exact = text in words
            multiword = "_" in task and any(word in text for word in words)
            if exact or multiword:
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {text[:60]!r}")
    assert not offenders, "task named outside its module and the registry:\n" + "\n".join(offenders)


FEAST_INTERNAL = (
    "feast.infra",
    "feast.protos",
    "feast.utils",
    "feast.type_map",
    "feast.repo_",
    "feast.project",
)


def test_given_the_product_code_then_only_one_module_reaches_into_feast_internals():
    # when every product module's imports are read
    reaching = {
        path.relative_to(ROOT).as_posix(): sorted(
            n
            for n in imported(path)
            if n.startswith(FEAST_INTERNAL) or n == "feast.feature_view.DUMMY_ENTITY"
        )
        for path in product_files()
    }
    # then only the fence does (Feast's private names move between releases)
    assert {path for path, names in reaching.items() if names} == {"features/feast_internals.py"}


def test_given_the_service_module_when_imported_then_neither_feast_nor_matplotlib_is_loaded():
    import subprocess
    import sys

    # given a fresh interpreter, when it imports what BentoML's supervisor imports to start the API
    probe = "import sys, serving.service; print(sorted({'feast', 'matplotlib'} & set(sys.modules)))"
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )

    # then the feature store and the plotting library wait until a worker or a training run needs them
    assert found.stdout.strip() == "[]"
