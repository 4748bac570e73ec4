# Two commands do all set-up on a fresh machine (see README.md):
#   make demo   # install + solve a question with TRIM on the embedded CPU models
#   make test   # install + ruff + mypy + pytest (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/*.txt 2>/dev/null | cksum | cut -d' ' -f1)
QUESTION ?= Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?

.PHONY: install demo test lint typecheck unit slow format clean

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[dev]"
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/trim solve "$(QUESTION)"

lint: install
	$(VENV)/bin/ruff check langchain_trim tests benchmarks
	$(VENV)/bin/ruff format --check langchain_trim tests benchmarks

typecheck: install
	$(VENV)/bin/mypy

unit: install
	$(PY) -m pytest --doctest-modules langchain_trim tests

test: lint typecheck unit

slow: install
	$(PY) -m pytest -m slow tests

format: install
	$(VENV)/bin/ruff format langchain_trim tests benchmarks
	$(VENV)/bin/ruff check --fix langchain_trim tests benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
