"""Serve the dashboards in ``notebooks/apps/``: ``python -m opso_nb.apps [--server voila|panel] [--port N]``.

``make app`` runs this; the smoke test starts the very same command line.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

#: Folder of the dashboard notebooks in a source checkout.
APPS_DIR = Path(__file__).resolve().parents[1] / "notebooks" / "apps"


def serve_command(server: str = "voila", port: int = 8866, address: str = "127.0.0.1", apps_dir=APPS_DIR) -> list[str]:
    """Command line that serves every dashboard notebook in ``apps_dir``.

    Voila shows a page listing the apps at ``http://address:port/``; ``panel serve``
    serves each at ``/<notebook name>`` with an index page.
    """
    apps_dir = Path(apps_dir)
    bin_dir = Path(sys.executable).parent
    if server == "voila":
        return [str(bin_dir / "voila"), str(apps_dir), "--no-browser", f"--port={port}", f"--Voila.ip={address}",
                "--VoilaConfiguration.file_allowlist=['.*']"]
    if server == "panel":
        notebooks = sorted(str(p) for p in apps_dir.glob("*.ipynb"))
        return [str(bin_dir / "panel"), "serve", *notebooks, "--port", str(port), "--address", address,
                "--allow-websocket-origin", f"{address}:{port}", "--allow-websocket-origin", f"localhost:{port}"]
    raise ValueError(f"server must be 'voila' or 'panel', got {server!r}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Serve the opso_nb dashboards on the bundled example data.")
    parser.add_argument("--server", choices=["voila", "panel"], default="voila")
    parser.add_argument("--port", type=int, default=8866)
    parser.add_argument("--address", default="127.0.0.1")
    args = parser.parse_args(argv)
    cmd = serve_command(args.server, args.port, args.address)
    print(f"Serving the dashboards with {args.server} on http://{args.address}:{args.port}/  (Ctrl-C to stop)",
          flush=True)
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
