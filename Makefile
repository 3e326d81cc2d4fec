# landscape — developer commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow test-browser chromium docs docs-serve notebooks lint format bench bench-realistic clean

# The dev install pins torch==2.13.0 (a CPU build on this project's machines); the package
# itself accepts torch>=2.4.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# SGD vs Adam from one initialization on sklearn digits: figures, HTML report and HDF5 file
# in figures/ (about 30 s on 2 CPU cores). `landscape demo --help` for its options.
demo: $(STAMP)
	$(VENV)/bin/landscape demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: lint
	$(PY) -m pytest -m "not slow" -q; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

# Debian's chromium for the browser tests (tests/test_browser.py, tests/test_docs_site.py):
# installed with apt-get when missing and this runs as root (as CI does, from .ci/run);
# otherwise says what to install. Playwright (dev extra) drives that binary: it downloads
# no browser. Without Chromium the browser tests skip with a message.
chromium:
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium with apt-get"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || exit 1; \
	  else \
	    echo "the browser tests need Chromium: install Debian's chromium package" \
	      "(sudo apt-get install chromium), or put chromium on the PATH" >&2; \
	    exit 1; \
	  fi; \
	fi

# The demo's page in headless Chromium (tests/test_browser.py, about 20 s): no console error,
# every figure loaded; saves figures/report_screenshot.png, the README's screenshot.
test-browser: $(STAMP) chromium
	LANDSCAPE_SCREENSHOT=figures/report_screenshot.png $(PY) -m pytest tests/test_browser.py -q -rs

# The documentation site from docs/ into site/ (offline; warnings are errors). The tests
# build it too (tests/test_docs_site.py), run every code block of its pages
# (tests/test_docs_code.py) and check the built site in headless Chromium.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# Serve the built site at http://127.0.0.1:8000 (search needs a server, not file://).
docs-serve: docs
	$(PY) -m http.server --bind 127.0.0.1 --directory site 8000

# Re-run the example notebooks in a Jupyter kernel and store their outputs in them (what
# the repository holds; tests/test_notebooks.py checks the stored outputs match a run).
notebooks: $(STAMP)
	$(PY) tests/notebooks.py --write

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) benchmarks/hvp.py
	$(PY) benchmarks/spectra.py
	$(PY) benchmarks/surfaces.py

# ResNet-20, a small GPT-2, ViT-tiny and the MLP against every peer, one subprocess per
# workload (benchmarks/results/realistic.json). Not part of `make bench`: the full run takes
# hours on 2 CPU cores (mostly ResNet-20 spectra: ~800 products for the density alone, and
# the ground truth on the first run, cached afterwards in benchmarks/results/). Run it on an
# idle machine; `$(PY) benchmarks/realistic.py --quick` is a smoke test of a few minutes.
bench-realistic: $(STAMP)
	$(PY) benchmarks/realistic.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info site
