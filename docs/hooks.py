"""MkDocs hooks: pages and files from outside ``docs/`` join the site at their repository paths.

Every Markdown source links to other files by their path in the repository
(``../figures/demo_spectrum.png`` from ``docs/index.md``), so each reads well on GitHub too.
The site puts a page from ``docs/`` at its path below ``docs/`` and everything else at its
path in the repository: ``validation/spectrum.md`` (a page), ``examples/sgd_vs_adam.ipynb``
(a notebook page, rendered by mkdocs-jupyter with its stored outputs), and every repository
file that a page links to (``figures/demo_spectrum.png``, ``validation/spectrum.py``, ...).
Links are rewritten from repository paths to site paths, so MkDocs checks them as usual: a
link to a file that does not exist stays broken and ``mkdocs build --strict`` fails.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
DOCS = "docs"
#: Pages outside docs/ that the site includes (the navigation names them).
PAGES = ("validation/*.md", "examples/*.ipynb")
#: An inline Markdown link or image target: ``[text](target)`` or ``![alt](target "title")``.
LINK = re.compile(r"(\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
FENCE = re.compile(r"^(```|~~~)")


def _repo_path(file: File) -> str:
    """The file's path in the repository (``docs/index.md``, ``validation/spectrum.md``)."""
    return Path(file.abs_src_path).resolve().relative_to(ROOT).as_posix()


def _site_path(repo_path: str) -> str:
    """Where a repository file sits in the site: below docs/, or at its repository path."""
    prefix = DOCS + "/"
    return repo_path[len(prefix) :] if repo_path.startswith(prefix) else repo_path


def _is_relative(url: str) -> bool:
    return not (url.startswith(("#", "/")) or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", url))


def _targets(markdown: str, page_repo_path: str) -> set[str]:
    """Repository paths of the relative link targets in ``markdown`` outside code fences."""
    found = set()
    for line in _outside_fences(markdown):
        for match in LINK.finditer(line):
            url = match.group(2).split("#", 1)[0]
            if url and _is_relative(url):
                found.add(
                    posixpath.normpath(posixpath.join(posixpath.dirname(page_repo_path), url))
                )
    return found


def _outside_fences(markdown: str) -> list[str]:
    lines, fenced = [], False
    for line in markdown.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


@event_priority(100)  # before mkdocs-jupyter turns notebooks into pages
def on_files(files: Files, config) -> Files:
    """Add the outside pages, then every outside repository file that a page links to."""
    for pattern in PAGES:
        for path in sorted(ROOT.glob(pattern)):
            uri = path.relative_to(ROOT).as_posix()
            files.append(_file(uri, config))
    for page in [f for f in files if f.src_uri.endswith(".md")]:
        text = Path(page.abs_src_path).read_text(encoding="utf-8")
        for target in _targets(text, _repo_path(page)):
            path = ROOT / target
            site = _site_path(target)
            if target.startswith("..") or not path.is_file() or site in files.src_uris:
                continue  # outside the repository, missing (MkDocs reports it), or present
            files.append(_file(target, config))
    return files


def _file(repo_path: str, config) -> File:
    """A file of the repository, outside docs/, at its repository path in the site."""
    return File(repo_path, str(ROOT), config.site_dir, config.use_directory_urls)


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    """Rewrite each relative link from the page's repository path to its site path."""
    page_repo = _repo_path(page.file)
    page_dir = posixpath.dirname(page.file.src_uri) or "."

    def rewrite(match: re.Match) -> str:
        url = match.group(2)
        path, _, fragment = url.partition("#")
        if not path or not _is_relative(path):
            return match.group(0)
        target = posixpath.normpath(posixpath.join(posixpath.dirname(page_repo), path))
        new = posixpath.relpath(_site_path(target), page_dir) + (f"#{fragment}" if fragment else "")
        return match.group(1) + new + match.group(3)

    out, fenced = [], False
    for line in markdown.splitlines(keepends=True):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        out.append(line if fenced else LINK.sub(rewrite, line))
    return "".join(out)
