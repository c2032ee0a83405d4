# san-gan developer commands. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test test-fast lint format bench demo clean

# (re)install when pyproject.toml changes; torch is not pinned: pip picks the one torchvision requires
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip || echo "note: pip not upgraded (offline?)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# offline: draws its own test image, upscales it with the default model in weights/, writes demo/*.png
demo: install
	$(PY) -m sr_app.demo --out demo

bench: install
	$(PY) benchmarks/norm_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
