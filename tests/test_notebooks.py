"""The example notebooks run in a real Jupyter kernel and show what a user sees.

Every ``examples/*.ipynb`` runs top to bottom in a fresh ipykernel under nbclient
(``tests/notebooks.py``), two kernels at a time (one thread each). Then, per notebook:

* no cell raised (nbclient stops at the first error and the test names the cell);
* the rich outputs a user sees are there: the report's or comparison's HTML display
  (``text/html`` from ``_repr_html_``, the report's own ``<div class="lsr">``), matplotlib's
  inline figures (``image/png``), and for ``analyze`` in a notebook ``tqdm.auto``'s widget
  progress bar;
* the committed file is what a run produces: its code cells were run in order in one
  kernel (execution counts 1, 2, ...), and each cell shows the same kinds of output as the
  fresh run (``make notebooks`` re-runs and rewrites them after a change).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest

pytest.importorskip("nbclient", reason="the notebook tests need the docs extra (nbclient)")
pytest.importorskip("ipykernel", reason="the notebook tests need the docs extra (ipykernel)")

from notebooks import EXAMPLES, NOTEBOOKS, WIDGET, execute, output_kinds, without_widgets

HTML, PNG = "text/html", "image/png"
REPORT_HTML = '<div class="lsr">'
# What each notebook must show: mime types anywhere in its outputs, whether its HTML
# includes a report or comparison display, and lines of its printed text with how often.
EXPECTED = {
    "analyze_a_model": {
        "mimes": {HTML, PNG, WIDGET},
        "report": True,
        "text": {"top eigenvalues": 1, "lr_max (momentum) by batch size": 1, "True": 1},
    },
    "sgd_vs_adam": {"mimes": {HTML, PNG, WIDGET}, "report": True, "text": {"barrier": 1}},
    "hf_causal_lm": {
        "mimes": {HTML, PNG, WIDGET},
        "report": True,
        "text": {"scored tokens in 16 sequences": 1, "'accuracy'": 1},
    },
    "edge_of_stability": {
        "mimes": {PNG},
        "report": False,
        "text": {"edge of stability reached at step": 2},
    },
}


@pytest.fixture(scope="module")
def executed():
    """Every notebook run once in its own kernel, two at a time: {name: notebook or error}."""

    def run(path):
        try:
            return execute(path)
        except Exception as error:  # reported by the test of this notebook
            return error

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip((p.stem for p in NOTEBOOKS), pool.map(run, NOTEBOOKS)))


def _fresh(executed, name):
    result = executed[name]
    if isinstance(result, Exception):
        pytest.fail(f"examples/{name}.ipynb failed in the kernel:\n{result}")
    return result


def _mimes(notebook):
    return {
        mime
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        for mime in output.get("data", {})
    }


def _printed(notebook):
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )


def _html(notebook):
    return "".join(
        output["data"][HTML]
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if HTML in output.get("data", {})
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_in_a_kernel_with_rich_outputs(executed, name):
    notebook = _fresh(executed, name)
    expected = EXPECTED[name]
    missing = expected["mimes"] - _mimes(notebook)
    assert not missing, f"examples/{name}.ipynb showed no {sorted(missing)}"
    assert (REPORT_HTML in _html(notebook)) == expected["report"]
    printed = _printed(notebook)
    for line, count in expected["text"].items():
        assert printed.count(line) >= count, f"{line!r} not printed {count}x:\n{printed}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_committed_outputs_are_those_of_a_run(executed, name):
    committed = nbformat.read(EXAMPLES / f"{name}.ipynb", as_version=4)
    fresh = without_widgets(_fresh(executed, name))
    code = [c for c in committed.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"examples/{name}.ipynb was not run top to bottom in one kernel (execution counts "
        f"{counts}): run `make notebooks`"
    )
    fresh_code = [c for c in fresh.cells if c.cell_type == "code"]
    for i, (old, new) in enumerate(zip(code, fresh_code, strict=True)):
        assert output_kinds(old) == output_kinds(new), (
            f"examples/{name}.ipynb, code cell {i + 1}: committed outputs "
            f"{sorted(output_kinds(old))}, a run gives {sorted(output_kinds(new))}: run "
            "`make notebooks`"
        )
    assert all(WIDGET not in output.get("data", {}) for c in code for output in c.outputs)


def test_every_notebook_is_tested():
    assert {p.stem for p in NOTEBOOKS} == set(EXPECTED)


def test_output_kinds_tell_a_stale_notebook_from_a_fresh_one():
    """The comparison above can fail: a cell whose figure went missing differs in kinds."""
    cell = nbformat.v4.new_code_cell("fig")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="x"),
        nbformat.v4.new_output("display_data", data={PNG: "", "text/plain": "<Figure>"}),
    ]
    stale = nbformat.v4.new_code_cell("fig")
    stale.outputs = [nbformat.v4.new_output("stream", name="stdout", text="x")]
    assert output_kinds(cell) == {
        "stream:stdout",
        "display_data:image/png",
        "display_data:text/plain",
    }
    assert output_kinds(cell) != output_kinds(stale)
