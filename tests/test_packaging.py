"""Set-up files agree with each other: one dependency list, README commands, CI entry point."""
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# conda-forge spells a few PyPI names differently
CONDA_NAMES = {"soundfile": "pysoundfile", "soxr": "soxr-python"}


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def dependency_names():
    project = pyproject()["project"]
    deps = list(project["dependencies"])
    for extra in ("dashboards", "notebooks", "birdnet", "search", "dask"):
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
    from packaging.requirements import Requirement

    makefile = (ROOT / "Makefile").read_text()
    pins = dict(re.findall(r"(torch|torchvision)==([\d.]+)", makefile))
    ranges = {Requirement(d).name: Requirement(d).specifier for d in pyproject()["project"]["dependencies"]}
    for name, version in pins.items():
        assert version in ranges[name], f"{name}=={version} not in pyproject range {ranges[name]}"


def test_every_dashboard_has_a_notebook_a_binder_link_and_a_browser_test():
    from opso_nb.dashboards import _DASHBOARDS

    readme = (ROOT / "README.md").read_text()
    # dashboards listed in the registry but not written yet are skipped; written ones need an app notebook
    written = [m for m in _DASHBOARDS.values() if (ROOT / "opso_nb" / "dashboards" / f"{m}.py").exists()]
    assert "spectrogram_explorer" in written
    for module in written:
        assert (ROOT / "notebooks" / "apps" / f"{module}.ipynb").exists(), f"no notebooks/apps/{module}.ipynb"
    for module in _DASHBOARDS.values():
        assert f"voila/render/notebooks/apps/{module}.ipynb" in readme, f"README lacks a Binder link for {module}"
    for notebook in (ROOT / "notebooks" / "apps").glob("*.ipynb"):
        assert notebook.stem in _DASHBOARDS.values(), f"{notebook.name} is not registered in opso_nb.dashboards"
        assert (ROOT / "tests" / f"test_{notebook.stem}_browser.py").exists(), f"{notebook.name} has no browser test"
