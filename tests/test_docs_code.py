"""Every Python code block of the documentation runs, and the API reference is complete.

Each page's blocks run in order in one fresh namespace, in a temporary working directory
(files a page writes land there), with matplotlib's Agg backend: as a reader who pastes
them into one notebook would run them. Blocks marked ``<!-- skip: reason -->`` (see
``docs_blocks``) do not run; there may be at most ``MAX_SKIPPED`` of them.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

import matplotlib
import pytest
import torch
from docs_blocks import Block, python_blocks

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md")) + sorted((ROOT / "validation").glob("*.md"))
MAX_SKIPPED = 6  # blocks that cannot run offline or fast (torchrun, a real Trainer)


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


RUNNABLE = [p for p in PAGES if any(b.skip_reason is None for b in python_blocks(p.read_text()))]


@pytest.mark.parametrize("page", RUNNABLE, ids=_name)
def test_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    namespace = {"__name__": "__main__"}
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on two shared cores: several times slower under load
    try:
        for block in python_blocks(page.read_text(encoding="utf-8")):
            if block.skip_reason is None:
                _run(block, f"{_name(page)}:{block.line}", namespace)
    finally:
        plt.close("all")
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)


def _run(block: Block, where: str, namespace: dict) -> None:
    """Execute one block; a failure names the page and the block's first line (``where``)."""
    try:
        exec(compile(block.code, where, "exec"), namespace)
    except Exception as error:  # re-raised with the page and line
        raise AssertionError(f"the code block at {where} failed: {error!r}") from error


def test_skipped_blocks_are_few_and_say_why():
    skipped = [
        f"{_name(p)}:{b.line}: {b.skip_reason}"
        for p in PAGES
        for b in python_blocks(p.read_text(encoding="utf-8"))
        if b.skip_reason is not None
    ]
    assert len(skipped) <= MAX_SKIPPED, "\n".join(skipped)
    assert all(len(s.split(": ", 1)[1]) > 10 for s in skipped), skipped


def test_blocks_are_found_and_skip_marks_are_honored():
    page = (
        "text\n\n```python\nx = 1\n```\n\n<!-- skip: needs torchrun -->\n\n"
        "```python\nraise SystemExit\n```\n\n```bash\nmake test\n```\n"
        "- item\n\n  ```py\n  y = x + 1\n  ```\n"
    )
    blocks = python_blocks(page)
    assert [b.code for b in blocks] == ["x = 1\n", "raise SystemExit\n", "y = x + 1\n"]
    assert [b.skip_reason for b in blocks] == [None, "needs torchrun", None]
    assert [b.line for b in blocks] == [4, 10, 19]
    with pytest.raises(ValueError, match="never closed"):
        python_blocks("```python\nx = 1\n")


def test_a_failing_block_names_its_page_and_line():
    namespace = {}
    _run(Block("x = 2\n", 1), "page.md:1", namespace)
    with pytest.raises(AssertionError, match=r"page\.md:5 failed: ZeroDivisionError"):
        _run(Block("1 / (x - 2)\n", 5), "page.md:5", namespace)


def test_every_page_with_code_runs_some():
    """A page whose Python blocks are all skipped would test nothing: none may exist."""
    only_skipped = [_name(p) for p in PAGES if python_blocks(p.read_text()) and p not in RUNNABLE]
    assert only_skipped == []


REFERENCE = DOCS / "reference"


def _documented() -> list[str]:
    """The object paths of the ``::: landscape....`` entries of the reference pages."""
    paths = []
    for page in sorted(REFERENCE.glob("*.md")):
        paths += re.findall(r"^::: (landscape[\w.]*)\s*$", page.read_text(), re.MULTILINE)
    return paths


def _runtime(path: str):
    """The object at a dotted path, importing the longest module prefix."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def test_api_reference_documents_every_public_name_once():
    import landscape

    names = [path.rsplit(".", 1)[-1] for path in _documented()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"documented twice: {duplicates}"
    missing = sorted(set(landscape.__all__) - set(names))
    assert not missing, f"public names without a reference entry in docs/reference/: {missing}"
    unknown = sorted(set(names) - set(landscape.__all__))
    assert not unknown, f"docs/reference/ documents names that are not public: {unknown}"
    for path in _documented():  # the entry is the public object itself
        assert _runtime(path) is getattr(landscape, path.rsplit(".", 1)[-1]), path


def test_api_reference_entries_resolve_to_the_right_kind_of_object():
    """What mkdocstrings renders (griffe, reading the source) is what the name is at run time.

    ``landscape.trace`` is a function, but statically ``landscape.linalg.trace`` is also a
    module: an entry that resolved to the module would document the wrong object.
    """
    griffe = pytest.importorskip("griffe", reason="needs the docs extra (mkdocstrings)")
    package = griffe.load("landscape", search_paths=[str(ROOT)])
    for path in _documented():
        static = package[path.removeprefix("landscape.")] if path != "landscape" else package
        static = static.final_target if static.is_alias else static
        obj = _runtime(path)
        expected = (
            "module"
            if inspect.ismodule(obj)
            else "class"
            if inspect.isclass(obj)
            else "function"
            if callable(obj)
            else "attribute"
        )
        assert static.kind.value == expected, (path, static.path, static.kind.value, expected)


README_LINKS = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
FIRST_VISIT = (  # what a new user must find from the README in one click
    "docs/howto/huggingface.md",  # how to analyze a Hugging Face model
    "docs/concepts/lambda-max.md",  # what λmax means
    "docs/howto/distributed.md",  # how to run on several GPUs
)


def test_readme_links_reach_files_and_the_first_visit_pages():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t for t in README_LINKS.findall(readme) if "://" not in t]
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
    assert set(FIRST_VISIT) <= set(targets)
    head = readme.split("\n## ", 1)[0]  # the title, the two commands, the first links
    assert "make demo" in head and "make test" in head
    assert all(page in head for page in FIRST_VISIT)


if __name__ == "__main__":  # pragma: no cover - run one page by hand
    sys.exit(pytest.main([__file__, "-q", "-k", sys.argv[1] if len(sys.argv) > 1 else ""]))
