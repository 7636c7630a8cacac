# The two set-up commands of the README: `make demo` (the main job) and `make test`.
# Both create .venv on first use (torch==2.13.0 first, from the local wheel) and are idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dynviz-installed

.PHONY: install demo test test-all lint bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[app,export,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dynviz demo --out runs/demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	bash scripts/install-browser.sh || echo "chromium unavailable: the browser tests will be skipped"
	$(VENV)/bin/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	bash scripts/install-browser.sh
	$(VENV)/bin/python -m pytest -q -m ""

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(VENV)/bin/dynviz bench --update-docs

clean-venv:
	rm -rf $(VENV)
