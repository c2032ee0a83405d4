# san-gan developer commands. `make test` is what CI runs (.ci/run).
#   make install             venv + the product (no metrics extra: NIQE/LPIPS/FID need `pip install -e ".[metrics]"`)
#   make install TORCH=cpu   the same with CPU-only torch/torchvision from the PyTorch CPU index (no CUDA
#                            libraries: ~4.5 GB less); on a fresh venv (`make clean` first if .venv exists)
#   make test                venv + ".[test]" (every extra the tests use), ruff, pytest (TORCH=cpu works too)
#   make demo                the default model on a public-domain photo and a drawn chart (core install only)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?=
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

ifneq ($(filter-out cpu,$(TORCH)),)
$(error TORCH must be empty (pip's choice) or cpu, got '$(TORCH)')
endif

.PHONY: install install-test test test-fast lint format bench demo check-cpu-install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip || echo "note: pip not upgraded (offline?)"
ifeq ($(TORCH),cpu)
	$(PY) -m pip install -q torch torchvision --index-url $(TORCH_CPU_INDEX)
endif

# TORCH=cpu on a venv made earlier with pip's (CUDA) torch: say so instead of pretending
ifeq ($(TORCH),cpu)
CHECK_CPU_TORCH = $(PY) -c "import sys, torch; sys.exit(torch.version.cuda and 'TORCH=cpu: $(VENV) already holds CUDA torch ' + torch.__version__ + '; make clean first')"
else
CHECK_CPU_TORCH = true
endif

# (re)install when pyproject.toml changes; torch is not pinned: pip keeps the torch already there
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	@$(CHECK_CPU_TORCH)
	touch $@

# the test extra: the metrics extra (pyiqa, lpips, matplotlib), pytest, ruff, scipy
$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[test]"
	@$(CHECK_CPU_TORCH)
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

test: install-test
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

test-fast: install-test
	$(PY) -m pytest -m "not slow"

lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-test
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# offline: a real photo (public domain) and a drawn chart, x4 with the default model in weights/, demo/*/*.png
demo: install
	$(PY) -m sr_app.demo --out demo

bench: install
	$(PY) benchmarks/norm_overhead.py

# the CPU-only install from scratch in a throwaway venv, then the demo on it (needs the PyTorch CPU index)
check-cpu-install:
	rm -rf /tmp/san-gan-cpu-venv
	$(MAKE) demo VENV=/tmp/san-gan-cpu-venv TORCH=cpu
	/tmp/san-gan-cpu-venv/bin/python -c "import torch; assert torch.version.cuda is None, torch.__version__; print('cpu-only torch', torch.__version__)"
	du -sh /tmp/san-gan-cpu-venv

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
