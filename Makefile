# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The sample articles are dated; the demo sends the issue of the newest one.
DEMO_DATE ?= 2026-11-24

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/newsletter subscribers check
	$(BIN)/newsletter compose --date $(DEMO_DATE) --explain
	$(BIN)/newsletter preview --date $(DEMO_DATE)
	$(BIN)/newsletter send --date $(DEMO_DATE)

# The bounce tests run a real Postfix and Dovecot, the reader-page tests a headless
# Chromium: installed here (Debian packages, as root) when missing; without them those
# tests skip, saying why (and fail under CI=true).
test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy newsletter
	tests/servers/install.sh
	tests/servers/install-browser.sh
	$(BIN)/python -m pytest

# Generates 100,000 subscribers; takes a few minutes. Figures: table + benchmarks/results.json
bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/run.py --subscribers 100000 --smtp-subscribers 10000

# The static checks of `make test` without the tests. (No `ruff format --check`: the code
# is laid out by hand to ruff's lint rules, and the formatter would rewrite most files.)
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy newsletter

clean:
	rm -rf $(VENV) outbox/*/ outbox/*.eml outbox/*.sqlite3* outbox/unsubscribe.key
