"""Tiny helper to write tutorial notebooks from Python lists: cells are ("md", text) or ("code", text)."""
from pathlib import Path

import nbformat


def write_notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(src.strip("\n")) if kind == "md" else nbformat.v4.new_code_cell(src.strip("\n"))
        for kind, src in cells
    ]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path
