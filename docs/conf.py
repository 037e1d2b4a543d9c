"""Sphinx configuration of the opso_nb documentation site.

Build the whole site (every tutorial notebook is executed, results cached under ``docs/_build``)::

    python -m sphinx -b html docs docs/_build/html

Build it with some tutorials only (a glob over ``notebooks/``; the API pages are always built)::

    python -m sphinx -b html -D opso_notebooks=07_* docs docs/_build/html

Nothing is fetched from the network: no intersphinx, no remote scripts, fonts or widget managers.
"""
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# Document (and execute the notebooks against) this checkout, not whatever opso_nb is installed.
# The notebook kernels are subprocesses: they see the checkout through PYTHONPATH.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
# Figures must reach the page: the kernels need Jupyter's inline backend, which an MPLBACKEND (say Agg,
# as the test commands set) would replace, silently dropping the figures of notebooks that do not ask
# for `%matplotlib inline` themselves.
os.environ.pop("MPLBACKEND", None)

project = "opso_nb"
author = "the opso_nb developers"
copyright = "the opso_nb developers"
release = version = __import__("opso_nb").__version__

extensions = [
    "opso_docs",  # docs/_ext: assembles the tutorials, API, dashboards and differences pages
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
]

# opso_docs writes tutorials/NN_*.ipynb (copies of notebooks/) and api/ at each build; git ignores them
exclude_patterns = ["_build", "_ext", "_templates", "**.ipynb_checkpoints"]
templates_path = ["_templates"]
# .rst first: autosummary writes its generated pages with the first suffix
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# --- tutorials: executed at build time, so a reader sees every figure without running anything ---
nb_execution_mode = "cache"
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_execution_timeout = 600  # seconds per cell
nb_execution_in_temp = True  # notebooks write files (runs/, models) relative to their folder
nb_execution_raise_on_error = True  # a tutorial that fails breaks the build instead of publishing a traceback
nb_execution_show_tb = True
nb_merge_streams = True
# the widget manager would come from a CDN: widget outputs (tqdm.auto progress bars) stay invisible
nb_ipywidgets_js = {}
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# --- API reference from docstrings (numpy style) ---
autosummary_generate = True
autosummary_imported_members = False
# each module page (template: _templates/autosummary/module.rst) documents the objects the module
# defines, once; names a package re-exports are documented where they are defined
autodoc_default_options = {"show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

# --- theme: pydata-sphinx-theme, everything served from the build folder ---
html_theme = "pydata_sphinx_theme"
html_title = "opso_nb"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_static_path = ["_static"]
html_css_files = ["opso.css"]
html_show_sourcelink = False
html_copy_source = False
