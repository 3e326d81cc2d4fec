# landscape — developer commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow test-browser lint format bench bench-realistic clean

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

# The demo's page in headless Chromium (tests/test_browser.py, about 20 s): no console error,
# every figure loaded; saves figures/report_screenshot.png, the README's screenshot. Installs
# Debian's chromium with apt-get when it is missing and this runs as root; otherwise says
# what to install. Playwright (dev extra) drives that binary: it downloads no browser.
test-browser: $(STAMP)
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium with apt-get"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || exit 1; \
	  else \
	    echo "test-browser needs Chromium: install Debian's chromium package" \
	      "(sudo apt-get install chromium), or put chromium on the PATH" >&2; \
	    exit 1; \
	  fi; \
	fi
	LANDSCAPE_SCREENSHOT=figures/report_screenshot.png $(PY) -m pytest tests/test_browser.py -q -rs

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
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
