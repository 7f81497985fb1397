# `make demo` and `make test` are the README's two commands: each creates/refreshes the project
# virtualenv (.venv) itself, so they work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean sample chromium

$(STAMP): pyproject.toml requirements/test.txt requirements/test-nodeps.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements/test.txt -e .
	# reference implementation for the OOD tests; its dependency on torchvision must stay out
	$(BIN)/python -m pip install -q --no-deps -r requirements/test-nodeps.txt
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/datamap demo

# The browser tests drive Debian's Chromium (Playwright's own download is not used). `make test`
# installs it where it can (root or passwordless sudo, with apt-get) and otherwise stops with the
# command to run: the suite never passes by skipping them.
CHROMIUM_BIN := $(or $(DATAMAP_CHROMIUM),/usr/bin/chromium)
CHROMIUM_PKGS := chromium fonts-dejavu-core

chromium:
	@if [ -x "$(CHROMIUM_BIN)" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Chromium is missing at $(CHROMIUM_BIN): installing it for the browser tests (apt-get)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends $(CHROMIUM_PKGS) || exit 1; \
	fi; \
	if [ ! -x "$(CHROMIUM_BIN)" ]; then \
	  echo "error: the browser tests need Chromium at $(CHROMIUM_BIN). Install it with:"; \
	  echo "    sudo apt-get install -y --no-install-recommends $(CHROMIUM_PKGS)"; \
	  echo "or set DATAMAP_CHROMIUM=/path/to/chromium, then run make test again."; \
	  exit 1; \
	fi

test: $(STAMP) lint chromium
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check analysis dashboard tests benchmarks sample_data
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_dynamics.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build *.egg-info
