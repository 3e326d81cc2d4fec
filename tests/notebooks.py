"""Run the example notebooks in a real Jupyter kernel; ``--write`` stores their outputs.

A notebook runs top to bottom in a fresh ``python3`` kernel (ipykernel, the interpreter
running this module) with ``examples/`` as its working directory, as a user running it from
a clone would, under nbclient: the rich display (``_repr_html_``), ``tqdm.auto``'s widget
progress bars and matplotlib's inline figures all happen as in Jupyter. A cell that raises
stops the run with nbclient's ``CellExecutionError`` (the cell and the traceback).

``python tests/notebooks.py --write [NAME ...]`` (``make notebooks``) re-runs the notebooks
and writes them back with their outputs, which is what the repository holds: they read with
their figures on GitHub and in the docs site, and ``tests/test_notebooks.py`` re-runs them
and checks that what is committed is what a run produces. Progress-bar widgets are dropped
from the written files (their state is live-only, and rendering them would need the widget
JavaScript from the network); execution timings are not recorded.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"
TIMEOUT_S = 300  # per cell


def kernel_env() -> dict[str, str]:
    """The kernel's environment: matplotlib's inline backend, one thread per process."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # not Agg: inline
    env.setdefault("OMP_NUM_THREADS", "1")  # two threads on two shared cores thrash
    return env


def execute(path: Path) -> nbformat.NotebookNode:
    """Run the notebook at ``path`` in a fresh kernel and return it with its outputs."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,
    )
    client.execute(env=kernel_env())
    return notebook


def without_widgets(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop widget outputs (progress bars) and widget state, in place; return the notebook."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET not in o.get("data", {})]
    notebook.metadata.pop("widgets", None)
    return notebook


def output_kinds(cell: nbformat.NotebookNode) -> set[str]:
    """What a code cell showed: ``stream:stdout``, ``display_data:image/png``, ..."""
    kinds = set()
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            kinds.add(f"stream:{output.name}")
        elif output.output_type == "error":
            kinds.add(f"error:{output.ename}")
        else:
            kinds.update(f"{output.output_type}:{mime}" for mime in output.get("data", {}))
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the outputs back")
    parser.add_argument("names", nargs="*", help="notebook names (default: all)")
    args = parser.parse_args()
    paths = [p for p in NOTEBOOKS if not args.names or p.stem in args.names or p.name in args.names]
    for path in paths:
        notebook = without_widgets(execute(path))
        if args.write:
            nbformat.write(notebook, path)
        print(f"{'wrote' if args.write else 'ran'} {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
