# `make demo` and `make test` are the README's two commands: each creates/refreshes the project
# virtualenv (.venv) itself, so they work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean sample

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

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check analysis dashboard tests benchmarks sample_data
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_dynamics.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build *.egg-info
