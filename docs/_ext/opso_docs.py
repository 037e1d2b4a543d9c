"""Pages of the opso_nb site that are assembled from the repository at build time.

The notebooks, the dashboard registry and the docstrings are the sources; this extension only
gathers them, so a new tutorial, dashboard, module or differences fragment appears on the site
without editing the docs:

- ``tutorials/NN_*.ipynb``: copies of ``notebooks/NN_*.ipynb``, refreshed only when their content
  changed so Sphinx's incremental build stays valid; only those matching the config value
  ``opso_notebooks`` (a glob, default all) are built;
- ``api/index.rst``: one recursive autosummary over the public modules that exist in this checkout
  (``opso_api_modules``; modules not written yet are skipped);
- ``dashboards.md``: the line ``% opso-docs: dashboards`` becomes one section per registered
  dashboard, with the help text of its app notebook;
- the docstring of each ``param.Parameterized`` class gains a table of its parameters;
- ``differences/index.md``: the line ``% opso-docs: differences`` becomes an include of every other
  page in ``differences/``, so fragments written by each area appear without a list to maintain.
"""
from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
from pathlib import Path

import param
from sphinx.util import logging

from opso_nb.dashboards import _DASHBOARDS  # the registry only: importing it does not import Panel

logger = logging.getLogger(__name__)

DASHBOARDS_MARKER = "% opso-docs: dashboards"
DIFFERENCES_MARKER = "% opso-docs: differences"

#: Public modules documented in the API reference, in reading order. Packages are walked recursively.
API_MODULES = [
    "opso_nb.audio",
    "opso_nb.spectrogram",
    "opso_nb.annotations",
    "opso_nb.data_selection",
    "opso_nb.sample",
    "opso_nb.preprocess",
    "opso_nb.ml",
    "opso_nb.ribbit",
    "opso_nb.signal_processing",
    "opso_nb.localization",
    "opso_nb.detection",
    "opso_nb.metrics",
    "opso_nb.review",
    "opso_nb.batch",
    "opso_nb.utils",
    "opso_nb.failures",
    "opso_nb.files",
    "opso_nb.aru",
    "opso_nb.taxa",
    "opso_nb.sample_data",
]


def _root(app) -> Path:
    return Path(app.srcdir).parent


def _write_if_changed(path: Path, data: bytes) -> None:
    # unchanged files keep their mtime, so Sphinx does not re-read (or re-execute) them
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def sync_tutorials(app) -> list[str]:
    """Copy the numbered notebooks into ``tutorials/``; return those matching ``opso_notebooks``.

    Copies whose notebook was deleted are removed; copies not matching the glob stay on disk (a later
    full build reuses them) and are excluded from this build by the caller.
    """
    source = _root(app) / "notebooks"
    target = Path(app.srcdir) / "tutorials"
    notebooks = sorted(source.glob("[0-9][0-9]_*.ipynb"))
    pattern = app.config.opso_notebooks
    if not pattern.endswith(".ipynb"):
        pattern += ".ipynb"
    chosen = [p.name for p in notebooks if fnmatch.fnmatch(p.name, pattern)]
    if not chosen:
        logger.warning(f"opso_notebooks={app.config.opso_notebooks!r} matches no notebook in {source}")
    for notebook in notebooks:
        _write_if_changed(target / notebook.name, notebook.read_bytes())
    for stale in set(target.glob("*.ipynb")) - {target / p.name for p in notebooks}:
        stale.unlink()
    return chosen


def _in_checkout(module: str, root: Path) -> bool:
    # an editable install elsewhere can supply modules this checkout lacks: those do not count
    try:
        spec = importlib.util.find_spec(module)  # imports the parent packages, not the module itself
    except ImportError:  # a parent is gone or is no longer a package
        return False
    return spec is not None and spec.origin is not None and Path(spec.origin).resolve().is_relative_to(root)


def write_api_index(app) -> list[str]:
    """Write ``api/index.rst`` for the modules of ``opso_api_modules`` that exist in this checkout."""
    present = [m for m in app.config.opso_api_modules if _in_checkout(m, _root(app))]
    missing = sorted(set(app.config.opso_api_modules) - set(present))
    if missing:
        logger.info(f"API reference: not (yet) in this checkout, skipped: {', '.join(missing)}")
    lines = [
        "API reference",
        "=============",
        "",
        "Generated from the docstrings. Module paths and names follow OpenSoundscape 0.9, so its",
        "documentation applies after changing the import root ``opensoundscape`` to ``opso_nb``",
        "(exceptions: :doc:`/differences/index`). Units are in each parameter's description:",
        "sample rates in Hz, times in seconds, frequencies in Hz.",
        "",
        ".. autosummary::",
        "   :toctree: generated",
        "   :recursive:",
        "",
        *[f"   {module}" for module in present],
        "",
    ]
    _write_if_changed(Path(app.srcdir) / "api" / "index.rst", "\n".join(lines).encode())
    # autosummary rewrites the pages of existing modules; a page of a module since removed would stay
    for stub in (Path(app.srcdir) / "api" / "generated").glob("*.rst"):
        if not _in_checkout(stub.stem, _root(app)):
            stub.unlink()
    return present


def differences_fragments(srcdir: Path) -> list[Path]:
    """Pages in ``differences/`` other than the index, in file-name order."""
    return sorted(p for p in (Path(srcdir) / "differences").glob("*.md") if p.name != "index.md")


def on_config_inited(app, config) -> None:
    chosen = sync_tutorials(app)
    config.exclude_patterns.extend(
        f"tutorials/{p.name}" for p in (Path(app.srcdir) / "tutorials").glob("*.ipynb") if p.name not in chosen
    )
    write_api_index(app)
    # fragments are included into differences/index, not pages of their own
    config.exclude_patterns.extend(f"differences/{p.name}" for p in differences_fragments(app.srcdir))


def _first_markdown_cell(notebook: Path) -> str:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    for cell in cells:
        if cell["cell_type"] == "markdown":
            source = cell["source"]
            return "".join(source) if isinstance(source, list) else source
    return ""


def dashboards_markdown(root: Path) -> str:
    """One section per registered dashboard: title and help text from its app notebook."""
    sections = []
    for class_name, stem in _DASHBOARDS.items():
        notebook = root / "notebooks" / "apps" / f"{stem}.ipynb"
        if not notebook.exists():
            logger.warning(f"dashboard {class_name} is registered but {notebook} does not exist")
            continue
        text = _first_markdown_cell(notebook).strip()
        title_match = re.match(r"#\s+(.+)\n?", text)
        title = title_match.group(1).strip() if title_match else stem.replace("_", " ").capitalize()
        body = text[title_match.end():].strip() if title_match else text
        body = re.sub(r"^(#+)\s", r"##\1 ", body, flags=re.M)  # keep its headings below ours
        sections.append(
            f"## {title}\n\n{body}\n\n"
            f"App notebook `notebooks/apps/{stem}.ipynb`; component `opso_nb.dashboards.{class_name}`. "
            f"Serve it alone with `voila notebooks/apps/{stem}.ipynb` or "
            f"`panel serve notebooks/apps/{stem}.ipynb`.\n"
        )
    return "\n".join(sections)


def differences_markdown(srcdir: Path) -> str:
    """An include of every differences fragment, its headings one level below the index's title."""
    fragments = differences_fragments(srcdir)
    if not fragments:
        return "No differences are recorded yet.\n"
    parts = []
    for fragment in fragments:
        text = fragment.read_text(encoding="utf-8")
        if not re.search(r"^#\s", text, flags=re.M):
            # a fragment without its own title is titled by its file name (e.g. signal_processing.md)
            parts.append(f"## {fragment.stem.replace('_', ' ').capitalize()}\n")
        parts.append(f"```{{include}} {fragment.name}\n:heading-offset: 1\n```\n")
    return "\n".join(parts)


def _short_repr(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _rst_escape(text: str) -> str:
    # parameter docs are plain text: "|delay|" or "name_" must not become reST markup
    return re.sub(r"_(?=\W|$)", r"\\_", re.sub(r"([\\|*`])", r"\\\1", text))


def parameter_table(cls) -> list[str]:
    """reST lines: a table of a ``param.Parameterized`` class's parameters (default, allowed values, doc)."""
    rows = []
    for name, parameter in cls.param.objects("existing").items():
        if name == "name":  # every Parameterized has it; not a setting
            continue
        allowed = []
        if getattr(parameter, "bounds", None) is not None:
            allowed.append(f"bounds {parameter.bounds}")
        objects = getattr(parameter, "objects", None)
        if isinstance(objects, (list, dict)) and objects:
            allowed.append("one of " + ", ".join(repr(o) for o in objects))
        doc = _rst_escape(" ".join((parameter.doc or "").split()))
        description = "; ".join(filter(None, [doc, *allowed]))
        rows += [
            f"   * - ``{name}``",
            f"     - ``{_short_repr(parameter.default)}``",
            f"     - {description}" if description else "     -",
        ]
    if not rows:
        return []
    header = ["", ".. rubric:: Tunable parameters", "", ".. list-table::", "   :header-rows: 1",
              "   :widths: 20 20 60", "", "   * - name", "     - default", "     - meaning"]
    return header + rows + [""]


def on_autodoc_process_docstring(app, what, name, obj, options, lines) -> None:
    # tunable classes are param.Parameterized: their settings are parameters, not __init__ arguments
    if what == "class" and isinstance(obj, type) and issubclass(obj, param.Parameterized):
        lines.extend(parameter_table(obj))


def on_source_read(app, docname, source) -> None:
    text = source[0]
    if DASHBOARDS_MARKER in text:
        text = text.replace(DASHBOARDS_MARKER, dashboards_markdown(_root(app)))
    if DIFFERENCES_MARKER in text:
        text = text.replace(DIFFERENCES_MARKER, differences_markdown(Path(app.srcdir)))
    source[0] = text


def on_env_get_outdated(app, env, added, changed, removed) -> list[str]:
    # these pages depend on files Sphinx does not track (registry, app notebooks, new fragments)
    return [doc for doc in ("dashboards", "differences/index") if doc in env.found_docs]


def setup(app):
    app.setup_extension("sphinx.ext.autodoc")  # for its autodoc-process-docstring event
    app.add_config_value("opso_notebooks", "[0-9][0-9]_*", "env")
    app.add_config_value("opso_api_modules", API_MODULES, "env")
    app.connect("config-inited", on_config_inited)
    app.connect("source-read", on_source_read)
    app.connect("env-get-outdated", on_env_get_outdated)
    app.connect("autodoc-process-docstring", on_autodoc_process_docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
