# JSQA for SpeechBrain: one-command set-up, tests, lint, demo and benchmarks.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test lint demo bench clean

install: $(STAMP)

$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(VENV)/bin/pytest -q

# The whole pipeline on built-in miniature corpora; DEMO_ARGS="--out DIR" elsewhere.
demo: $(STAMP)
	$(VENV)/bin/jsqa demo $(DEMO_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_inference.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
