# Two commands for a newcomer: `make demo` and `make test`. Both create .venv when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Spinning OpenMP threads halve matmul throughput on shared vCPUs (see README).
export OMP_WAIT_POLICY ?= PASSIVE
export PYTHONUNBUFFERED := 1

.PHONY: demo test install lint bench clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,perception]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

demo: $(STAMP)
	$(PY) -m dreamer.demo --config configs/crafter_tiny.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check dreamer diagnostics tests bench *.py

bench: $(STAMP)
	$(PY) bench/bench_tokenizer_cache.py
	$(PY) bench/bench_dynamics.py

clean-demo:
	rm -rf data/crafter_tiny checkpoints/crafter_tiny
