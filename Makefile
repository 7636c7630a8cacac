# The two set-up commands of the README: `make demo` (the main job) and `make test`.
# Both create .venv on first use (torch==2.13.0 first, from the local wheel) and are idempotent.
# Installs are pinned by constraints.txt (the versions CI tests); the package only sets floors.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dynviz-installed

.PHONY: install demo test test-all lint bench clean-venv

# Another CPU's kernels: oneDNN, MKL and ATen's vectorised ops held to AVX2 (what MKL runs on AMD
# processors, and oneDNN on those without AVX-512; issue 28). The tests that compare one network's
# output computed two ways (batch sizes, skipping, BN folding, static modules) run again with
# them, so that an Intel machine catches a comparison that holds only on its own kernels.
AVX2_KERNELS := ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2
KERNEL_TESTS := tests/test_network.py tests/test_official.py tests/test_export.py tests/test_common.py
# The wheel installed from the package index into fresh environments (no extras, [app]): slow
# (pip), but every install the README documents must work, so `make test` runs it too.
INSTALL_TESTS := tests/test_wheel.py

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt "torch==2.13.0"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	rm -rf dynviz.egg-info  # left by the setuptools builds of older checkouts
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dynviz demo --out runs/demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	bash scripts/install-browser.sh || echo "chromium unavailable: the browser tests will be skipped"
	$(VENV)/bin/python -m pytest -q -m "not slow"
	$(AVX2_KERNELS) $(VENV)/bin/python -m pytest -q -p no:cacheprovider $(KERNEL_TESTS)
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -m slow $(INSTALL_TESTS)

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
