"""Write the thin Voila notebook for one dashboard: `python tools/make_app_notebook.py ClassName file_stem "Title" "one-line help"`."""
import sys
from pathlib import Path

import nbformat

cls, stem, title, help_text = sys.argv[1:5]
nb = nbformat.v4.new_notebook()
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.cells = [
    nbformat.v4.new_markdown_cell(f"# {title}\n\n{help_text}"),
    nbformat.v4.new_code_cell(
        "import panel as pn\n"
        "pn.extension(comms=\"ipywidgets\", inline=True)  # inline: works offline\n"
        f"from opso_nb.dashboards import {cls}\n\n"
        f"app = {cls}()\n"
        "app.servable()\n"
        "app"
    ),
]
out = Path(__file__).resolve().parents[1] / "notebooks" / "apps" / f"{stem}.ipynb"
nbformat.write(nb, out)
print(out)
