"""Serve the dashboards in ``notebooks/apps/``.

``python -m opso_nb.apps [--server voila|panel] [--port N] [--data FOLDER ...] [--output FOLDER]``

``make app`` runs this; the smoke test starts the very same command line.

Workspace
    ``--data FOLDER`` (repeatable; also ``$OPSO_NB_DATA``, several folders joined
    with ``os.pathsep``) adds folders the dashboards may browse, next to the
    bundled examples; the dashboards open on the first one. ``--output FOLDER``
    (also ``$OPSO_NB_OUTPUT``; default :func:`opso_nb.workspace.default_output_dir`)
    is where every dashboard writes. Both are handed to the kernels as absolute
    paths in those environment variables, so they do not depend on the folder a
    kernel runs in (Voila starts kernels in ``notebooks/apps/``).

No leaks: Voila
    Every page visit starts a kernel. Voila's kernel manager (jupyter_server's
    ``MappingKernelManager``) is started with

    - ``cull_idle_timeout`` = ``--cull-idle-timeout`` (default 120 s): a kernel
      idle that long *with no page connected* is shut down. Closing the tab
      closes the connection, so a closed page's kernel is gone within
      ``cull_idle_timeout + cull_interval`` seconds.
    - ``cull_interval`` = ``--cull-interval`` (default 30 s): how often kernels
      are checked.
    - ``cull_connected = False``: a kernel whose page is still open is never
      culled, however long the user looks at it; ``cull_busy = False``: a
      kernel still computing is never culled.

No leaks: ``panel serve``
    Bokeh sessions whose page was closed are discarded after
    ``--unused-session-lifetime`` (default 15 000 ms), checked every
    ``--check-unused-sessions`` (default 5 000 ms). ``/rest/session_info``
    (``--rest-session-info``, with ``--session-history 1000``) reports the live
    sessions.

Offline
    Voila's stock "lab" template links Font Awesome from a CDN; the dashboards
    are served with the ``opso_nb`` template (:func:`voila_template_root`), which
    is the lab template without those links. Panel's own stylesheets are inlined
    by :mod:`opso_nb.dashboards` (``panel serve`` serves them locally), so no
    request leaves the machine.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

from opso_nb.utils import atomic_write
from opso_nb.workspace import DATA_ENV, OUTPUT_ENV, Workspace, default_output_dir

#: Folder of the dashboard notebooks in a source checkout.
APPS_DIR = Path(__file__).resolve().parents[1] / "notebooks" / "apps"

#: Seconds a Voila kernel with no page connected may stay idle before it is shut down.
CULL_IDLE_TIMEOUT = 120
#: Seconds between two checks for such kernels.
CULL_INTERVAL = 30
#: Milliseconds an unused ``panel serve`` session lives, and between two checks for them.
UNUSED_SESSION_LIFETIME_MS = 15_000
CHECK_UNUSED_SESSIONS_MS = 5_000

#: Sessions ``/rest/session_info`` remembers (a small record each; the live count is exact).
SESSION_HISTORY = 1000

#: Name of the Voila template the dashboards are served with.
VOILA_TEMPLATE = "opso_nb"

# The lab template without its CDN links. Voila's "lab" index adds two Font Awesome
# <link>s in block notebook_css; they are filtered out of the parent's block here.
_INDEX_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block notebook_css -%}
{%- filter replace('<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@^5/css/all.min.css" type="text/css" />', '') -%}
{%- filter replace('<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@^5/css/v4-shims.min.css" type="text/css" />', '') -%}
{{ super() }}
{%- endfilter -%}
{%- endfilter -%}
{%- endblock notebook_css -%}
"""

# The page skeleton of the tree (index) and error pages, without the Font Awesome CDN link
# of Voila's base page; same block names, so Voila's tree and error pages fill it.
_PAGE_TEMPLATE = """<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  <title>{% block title %}opso_nb dashboards{% endblock %}</title>
  <meta name="viewport" content="width=device-width, initial-scale=1.0">
  {% block stylesheets %}
  {% if include_css %}
    {{ include_css("static/index.css") }}
    {% if theme == 'dark' %}{{ include_css("static/theme-dark.css") }}
    {% elif theme == 'light' %}{{ include_css("static/theme-light.css") }}
    {% else %}{{ include_lab_theme(theme) }}{% endif %}
  {% endif %}
  {% endblock %}
  {% block meta %}{% endblock %}
</head>
<body data-base-url="{{ base_url }}voila/" data-voila="voila">
  <div>{% block body %}{% endblock %}</div>
  {% block scripts %}{% endblock %}
</body>
</html>
"""

_TEMPLATE_FILES = {
    "conf.json": '{"base_template": "lab"}\n',
    "index.html.j2": _INDEX_TEMPLATE,
    "page.html": _PAGE_TEMPLATE,
}


def voila_template_root() -> Path:
    """A Jupyter data folder holding the ``opso_nb`` Voila template (written once, atomically).

    Put it first on ``JUPYTER_PATH`` and pass ``--template=opso_nb``. It lives in the
    temporary folder, keyed by its content, so the installed package is never written to.
    """
    digest = hashlib.sha1(repr(sorted(_TEMPLATE_FILES.items())).encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / f"opso_nb-voila-{digest}-{os.getuid() if hasattr(os, 'getuid') else 0}"
    folder = root / "voila" / "templates" / VOILA_TEMPLATE
    for name, text in _TEMPLATE_FILES.items():
        target = folder / name
        if not target.is_file() or target.read_text() != text:
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_write(target) as fh:
                fh.write(text)
    return root


def voila_options(cull_idle_timeout: int = CULL_IDLE_TIMEOUT, cull_interval: int = CULL_INTERVAL) -> list[str]:
    """Voila options shared by ``make app`` and the browser tests: template, culling, file access."""
    return [
        f"--template={VOILA_TEMPLATE}",
        f"--MappingKernelManager.cull_idle_timeout={int(cull_idle_timeout)}",
        f"--MappingKernelManager.cull_interval={int(cull_interval)}",
        "--MappingKernelManager.cull_connected=False",
        "--MappingKernelManager.cull_busy=False",
    ]


def panel_options(unused_session_lifetime_ms: int = UNUSED_SESSION_LIFETIME_MS,
                  check_unused_sessions_ms: int = CHECK_UNUSED_SESSIONS_MS) -> list[str]:
    """``panel serve`` options shared by ``make panel`` and the browser tests: session expiry, session info."""
    return ["--unused-session-lifetime", str(int(unused_session_lifetime_ms)),
            "--check-unused-sessions", str(int(check_unused_sessions_ms)),
            "--rest-session-info", "--session-history", str(SESSION_HISTORY)]


def serve_command(server: str = "voila", port: int = 8866, address: str = "127.0.0.1", apps_dir=APPS_DIR,
                  cull_idle_timeout: int = CULL_IDLE_TIMEOUT, cull_interval: int = CULL_INTERVAL) -> list[str]:
    """Command line that serves every dashboard notebook in ``apps_dir``.

    Voila shows a page listing the apps at ``http://address:port/``; ``panel serve``
    serves each at ``/<notebook name>`` with an index page. Run it with the
    environment of :func:`serve_environment` (Voila needs its template on ``JUPYTER_PATH``).
    """
    apps_dir = Path(apps_dir)
    bin_dir = Path(sys.executable).parent
    if server == "voila":
        return [str(bin_dir / "voila"), str(apps_dir), "--no-browser", f"--port={port}", f"--Voila.ip={address}",
                "--VoilaConfiguration.file_allowlist=['.*']", *voila_options(cull_idle_timeout, cull_interval)]
    if server == "panel":
        notebooks = sorted(str(p) for p in apps_dir.glob("*.ipynb"))
        return [str(bin_dir / "panel"), "serve", *notebooks, "--port", str(port), "--address", address,
                "--allow-websocket-origin", f"{address}:{port}", "--allow-websocket-origin", f"localhost:{port}",
                *panel_options()]
    raise ValueError(f"server must be 'voila' or 'panel', got {server!r}")


def serve_environment(data=(), output=None, base=None) -> dict:
    """Environment for the server and its kernels: workspace folders as absolute paths, the Voila template.

    Parameters
    ----------
    data : list of str or Path
        Data folders, added in front of those already in ``$OPSO_NB_DATA``.
    output : str or Path, optional
        Output folder (default: ``$OPSO_NB_OUTPUT`` or :func:`default_output_dir`).
    base : dict, optional
        Environment to start from (default ``os.environ``).

    Raises
    ------
    opso_nb.workspace.PathRefused
        The output folder lies inside the installed package.
    """
    env = dict(os.environ if base is None else base)
    folders = [str(Path(d).expanduser().absolute()) for d in data]
    folders += [p for p in env.get(DATA_ENV, "").split(os.pathsep) if p.strip()]
    if output is None:
        output = env.get(OUTPUT_ENV) or default_output_dir()
    output = Path(output).expanduser().absolute()
    Workspace(data_dirs=[], output_dir=output)  # refuses an output folder inside the package
    env[DATA_ENV] = os.pathsep.join(dict.fromkeys(folders))
    env[OUTPUT_ENV] = str(output)
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(voila_template_root()), env.get("JUPYTER_PATH", "")) if p)
    env.setdefault("MPLBACKEND", "Agg")
    return env


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m opso_nb.apps", description="Serve the opso_nb dashboards.")
    parser.add_argument("--server", choices=["voila", "panel"], default="voila")
    parser.add_argument("--port", type=int, default=None, help="default 8866 (voila) or 5006 (panel)")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--data", action="append", default=[], metavar="FOLDER",
                        help=f"a folder of your recordings the dashboards may open (repeatable; also ${DATA_ENV})")
    parser.add_argument("--output", default=None, metavar="FOLDER",
                        help=f"where the dashboards write (default ${OUTPUT_ENV} or {default_output_dir()})")
    parser.add_argument("--cull-idle-timeout", type=int, default=CULL_IDLE_TIMEOUT,
                        help="seconds before the kernel of a closed Voila page is shut down")
    parser.add_argument("--cull-interval", type=int, default=CULL_INTERVAL,
                        help="seconds between checks for such kernels")
    args = parser.parse_args(argv)
    missing = [d for d in args.data if not Path(d).expanduser().is_dir()]
    if missing:
        parser.error(f"--data: not a folder: {', '.join(missing)}")
    env = serve_environment(args.data, args.output)
    port = args.port or (8866 if args.server == "voila" else 5006)
    cmd = serve_command(args.server, port, args.address, cull_idle_timeout=args.cull_idle_timeout,
                        cull_interval=args.cull_interval)
    print(f"Serving the dashboards with {args.server} on http://{args.address}:{port}/  (Ctrl-C to stop)\n"
          f"  data folders:  {env[DATA_ENV] or '(bundled examples only)'}\n  output folder: {env[OUTPUT_ENV]}",
          flush=True)
    os.execve(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
