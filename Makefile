# The two commands: `make test` and `make book`.
# Each creates .venv when missing and installs the pinned dependencies once (constraints.txt);
# a second run with nothing changed skips the install.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= book
SEED ?= 0
# The notebooks' DATA parameter: the synthetic demo, or the path of your data spec (book/running.md).
DATA ?= demo

# No model-hub lookups unless the user opts in (HF_HUB_OFFLINE=0 make book): offline, a
# failed lookup would retry for 20-50 s. The book's artefacts stay inside build/.
export HF_HUB_OFFLINE ?= 1
BOOK_CACHE ?= $(CURDIR)/build/cache
# Student copies default to the small profile, which runs on any laptop.
WORKSHOP_PROFILE ?= tiny
# Test processes (pytest-xdist): one per core by default; TEST_JOBS=0 runs the tests in one process.
TEST_JOBS ?= auto
PYTEST_ARGS := -ra -n $(TEST_JOBS) --dist loadfile

.PHONY: help install test test-fast coverage lint book notebooks html workshop lock clean

help:
	@echo "make test       lint, unit tests and the six notebooks under the tiny profile"
	@echo "make book       run the notebooks (PROFILE=$(PROFILE), DATA=$(DATA)) and build the HTML book in _build/html"
	@echo "make test-fast  unit tests only (skips the slow notebook run)"
	@echo "make coverage   make test's tests under coverage.py: the package's lines they run"
	@echo "make workshop   student copies of the notebooks (solutions removed) in build/workshop"
	@echo "make lock       re-pin constraints.txt from the current .venv"

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check habitat_helpers tests scripts benchmarks notebooks
	$(BIN)/python scripts/check_layers.py
	$(BIN)/python scripts/api_page.py --check

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m "not slow"

# Lines of habitat_helpers run by make test's tests, the notebook kernels included (pyproject.toml).
coverage: $(STAMP)
	rm -rf build/coverage && mkdir -p build/coverage
	$(BIN)/python -m coverage run -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m coverage combine --quiet
	$(BIN)/python -m coverage report

notebooks: $(STAMP)
	HABITAT_HELPERS_CACHE=$(BOOK_CACHE) $(BIN)/python -m habitat_helpers notebooks \
		--profile $(PROFILE) --seed $(SEED) --data $(DATA) --out build --no-progress

html: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going

book: notebooks
	$(MAKE) html

# Student copies: the notebooks without the solutions of their exercises (habitat_helpers/workshop.py).
# A copy edited or run since it was made is never overwritten (add WORKSHOP_FLAGS=--force to do so).
workshop: $(STAMP)
	$(BIN)/python -m habitat_helpers workshop --out build/workshop --profile $(WORKSHOP_PROFILE) $(WORKSHOP_FLAGS)

lock: $(STAMP)
	{ head -3 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e'; } > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf build _build
