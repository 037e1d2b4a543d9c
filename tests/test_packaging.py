"""Set-up files agree with each other: one dependency list, README commands, CI entry point; every
third-party import is declared."""
import ast
import json
import re
import sys
import tomllib
from functools import lru_cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from opso_nb.dashboards import _DASHBOARDS

ROOT = Path(__file__).resolve().parents[1]
# conda-forge spells a few PyPI names differently
CONDA_NAMES = {"soundfile": "pysoundfile", "soxr": "soxr-python"}


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def dependency_names():
    project = pyproject()["project"]
    deps = list(project["dependencies"])
    for extra in ("dashboards", "notebooks", "birdnet", "search", "wavelets", "dask"):
        deps += project["optional-dependencies"][extra]
    return sorted({re.split(r"[<>=!\[ ;]", d, 1)[0].lower() for d in deps})


@pytest.mark.parametrize("env_file", ["environment.yml", "binder/environment.yml"])
def test_environment_files_list_every_dependency(env_file):
    text = (ROOT / env_file).read_text().lower()
    listed = set(re.findall(r"^\s*-\s*([a-z0-9_.\-]+)", text, flags=re.M))
    missing = [n for n in dependency_names() if CONDA_NAMES.get(n, n) not in listed]
    assert not missing, f"{env_file} lacks {missing} (pyproject.toml is the source of truth)"


def test_binder_builds_the_package_and_voila():
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install" in post_build and "-e ." in post_build
    assert "voila" in post_build


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, flags=re.S)
    first = [line.split("#")[0].strip() for line in blocks[0].splitlines() if line.split("#")[0].strip()]
    assert first == ["make app", "make test"], first
    assert readme.index("make app") < 600, "the set-up commands must open the README"
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\s*$", ci, flags=re.M)


def test_torch_pins_in_makefile_are_admitted_by_pyproject():
    makefile = (ROOT / "Makefile").read_text()
    pins = dict(re.findall(r"(torch|torchvision)==([\d.]+)", makefile))
    ranges = {Requirement(d).name: Requirement(d).specifier for d in pyproject()["project"]["dependencies"]}
    for name, version in pins.items():
        assert version in ranges[name], f"{name}=={version} not in pyproject range {ranges[name]}"


def test_every_dashboard_has_a_notebook_a_binder_link_and_a_browser_test():
    readme = (ROOT / "README.md").read_text()
    for module in _DASHBOARDS.values():
        assert (ROOT / "opso_nb" / "dashboards" / f"{module}.py").exists(), f"registered, but no dashboards/{module}.py"
        assert (ROOT / "notebooks" / "apps" / f"{module}.ipynb").exists(), f"no notebooks/apps/{module}.ipynb"
        assert f"voila/render/notebooks/apps/{module}.ipynb" in readme, f"README lacks a Binder link for {module}"
    for notebook in (ROOT / "notebooks" / "apps").glob("*.ipynb"):
        assert notebook.stem in _DASHBOARDS.values(), f"{notebook.name} is not registered in opso_nb.dashboards"
        assert (ROOT / "tests" / f"test_{notebook.stem}_browser.py").exists(), f"{notebook.name} has no browser test"


def test_app_notebooks_are_thin():
    """An app notebook only builds its registered component: the code is in opso_nb.dashboards (CONTRIBUTING.md)."""
    for class_name, module in _DASHBOARDS.items():
        notebook = json.loads((ROOT / "notebooks" / "apps" / f"{module}.ipynb").read_text())
        code = [line.split("#")[0].strip() for cell in notebook["cells"] if cell["cell_type"] == "code"
                for line in "".join(cell["source"]).splitlines()]
        code = [line for line in code if line]
        assert code == [
            "import panel as pn",
            'pn.extension(comms="ipywidgets", inline=True)',
            f"from opso_nb.dashboards import {class_name}",
            f"app = {class_name}()",
            "app.servable()",
            "app",
        ], f"notebooks/apps/{module}.ipynb is not the thin template: {code}"


# --- every third-party import in opso_nb/ is declared in pyproject.toml ------------------------------

#: Import names whose distribution is not installed here, so importlib.metadata cannot name it.
IMPORT_TO_DISTRIBUTION = {"pywt": "pywavelets", "sklearn": "scikit-learn", "PIL": "pillow", "IPython": "ipython",
                          "yaml": "pyyaml"}
#: Modules or sub-packages that are only imported when their extra is installed (opso_nb.dashboards is
#: imported lazily): they may import that extra's packages at module level.
EXTRA_ONLY_MODULES = {"opso_nb/dashboards/": "dashboards"}
#: Imports found undeclared when this check was written; the lead adds them to pyproject.toml (or the
#: import goes), then deletes the entry: the test fails on an entry that is declared or no longer imported.
PENDING_DECLARATION = {
}
IMPORT_GUARDS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions():
    """{normalized distribution name: "core" or the set of extras declaring it}."""
    project = pyproject()["project"]
    declared = {normalize(Requirement(d).name): "core" for d in project["dependencies"]}
    for extra, requirements in project["optional-dependencies"].items():
        for requirement in requirements:
            name = normalize(Requirement(requirement).name)
            if name != "opso-nb" and declared.get(name) != "core":
                declared.setdefault(name, set()).add(extra)
    return declared


def _catches_import_errors(handler):
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, ast.Name) and t.id in IMPORT_GUARDS for t in types)


def imports_in(source, path="<string>"):
    """[(path, line, top-level name, guarded)] of the third-party imports in one module's source.

    guarded: the module imports without it (the import is inside a function, in a ``try`` that
    catches ImportError, or under ``if TYPE_CHECKING``).
    """
    found = []

    def visit(node, guarded):
        for child in ast.iter_child_nodes(node):
            child_guarded = guarded or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(node, ast.Try) and child in node.body:
                child_guarded = child_guarded or any(_catches_import_errors(h) for h in node.handlers)
            if isinstance(node, ast.If) and child in node.body and "TYPE_CHECKING" in ast.unparse(node.test):
                child_guarded = True
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0:
                names = [child.module]
            else:
                names = []
            for name in names:
                top = name.split(".")[0]
                if top != "opso_nb" and top not in sys.stdlib_module_names:
                    found.append((path, child.lineno, top, child_guarded))
            visit(child, child_guarded)

    visit(ast.parse(source, filename=path), False)
    return found


def third_party_imports():
    found = []
    for path in sorted((ROOT / "opso_nb").rglob("*.py")):
        found += imports_in(path.read_text(), path.relative_to(ROOT).as_posix())
    return found


@lru_cache(maxsize=None)
def _installed_distributions():
    return packages_distributions()


def distribution_of(import_name):
    installed = _installed_distributions().get(import_name)
    if installed:
        return [normalize(d) for d in installed]
    if import_name in IMPORT_TO_DISTRIBUTION:
        return [IMPORT_TO_DISTRIBUTION[import_name]]
    raise AssertionError(f"cannot tell which distribution provides {import_name!r}: install it here or add it "
                         "to IMPORT_TO_DISTRIBUTION in tests/test_packaging.py")


def test_the_import_scan_tells_guarded_from_unguarded_imports():
    source = (
        "import numpy as np, os\n"
        "from scipy import signal\n"
        "from . import utils\n"
        "from opso_nb.audio import Audio\n"
        "try:\n    import pywt\nexcept (ValueError, ImportError):\n    pywt = None\n"
        "try:\n    import panel\nexcept ValueError:\n    pass\n"
        "def player():\n    from IPython.display import Audio\n"
        "if TYPE_CHECKING:\n    import torch\n"
    )
    found = {(name, guarded) for _, _, name, guarded in imports_in(source)}
    assert found == {("numpy", False), ("scipy", False), ("pywt", True), ("panel", False), ("IPython", True),
                     ("torch", True)}


def test_every_third_party_import_is_declared():
    declared = declared_distributions()
    problems = []
    for path, line, name, guarded in third_party_imports():
        if name in PENDING_DECLARATION:
            continue
        distributions = distribution_of(name)
        where = [declared[d] for d in distributions if d in declared]
        if not where:
            problems.append(f"{path}:{line} imports {name} ({'/'.join(distributions)}), not in pyproject.toml")
        elif "core" not in where:
            extras = set().union(*where)
            extra_only = any((path == module or path.startswith(module)) and extra in extras
                             for module, extra in EXTRA_ONLY_MODULES.items())
            if not (guarded or extra_only):
                problems.append(f"{path}:{line} imports {name}, declared only in the extras {sorted(extras)}, "
                                "at module level: import it inside the function that needs it or in try/except "
                                "ImportError with a message naming the extra")
    assert not problems, "\n".join(problems)


def test_pending_declarations_are_still_pending():
    declared = declared_distributions()
    imported = {name for _, _, name, _ in third_party_imports()}
    for name, reason in PENDING_DECLARATION.items():
        assert name in imported, f"{name} is no longer imported: delete it from PENDING_DECLARATION"
        assert not any(d in declared for d in distribution_of(name)), (
            f"{name} is declared now: delete it from PENDING_DECLARATION ({reason})")
