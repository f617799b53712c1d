# Two commands for a newcomer: `make demo` and `make test`. Both create .venv when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Spinning OpenMP threads halve matmul throughput on shared vCPUs, but threads that sleep at once make every small
# op pay a wake-up: PASSIVE with a short spin (about 0.2 ms) is 1.2-2x faster than PASSIVE alone (README).
export OMP_WAIT_POLICY ?= PASSIVE
export GOMP_SPINCOUNT ?= 20000
export PYTHONUNBUFFERED := 1

.PHONY: demo test install lint bench clean-demo gpu-check gpu-wheels

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,perception]"
	touch $(STAMP)

# Everything, the slow subprocess / torchrun tests included, on TEST_JOBS processes (pytest-xdist, whole files
# per process: a file's fixtures and torchrun ports stay in one process), each with cores // jobs threads
# (tests/conftest.py): on 2 cores 6 min 43 s of pytest in a clean clone (10 min 39 s when each took 2 threads). The fast inner loop while coding is `$(PY) -m pytest -m "not slow" tests`.
TEST_JOBS ?= 2
test: $(STAMP)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || echo "make test: no chromium/chromedriver \
	on PATH: the browser tests will skip (apt-get install -y chromium chromium-driver; .ci/run does it)"
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_JOBS) --dist loadfile tests

DEMO ?= configs/crafter_tiny.yaml
DEMO_RUN ?= checkpoints/crafter_tiny
# The whole pipeline on the embedded default: collect Crafter episodes and fit the tokenizer (phase 0),
# build the latent cache (inside phase 1), a data summary with a reconstruction picture and the held-out
# PSNR, whether the play page's dream follows left and right (diagnostics/play_actions.py), then phases 2
# and 3, ending with the comparison table (random vs BC vs PMPO) in the real environment. Rerunning
# resumes / reuses.
demo: $(STAMP)
	$(PY) train_phase0_tokenizer.py --config $(DEMO)
	$(PY) train_phase1_cosmos.py --config $(DEMO)
	$(PY) -m dreamer.summary --config $(DEMO)
	$(PY) -m diagnostics.play_actions --checkpoint $(DEMO_RUN)/phase1_cosmos_final.pt --starts 4
	$(PY) train_phase2.py --config $(DEMO) --checkpoint $(DEMO_RUN)/phase1_cosmos_final.pt
	$(PY) train_phase3.py --config $(DEMO) --phase2-checkpoint $(DEMO_RUN)/phase2_final.pt

lint: $(STAMP)
	$(VENV)/bin/ruff check dreamer diagnostics tests bench *.py

bench: $(STAMP)
	$(PY) bench/bench_tokenizer_cache.py
	$(PY) bench/bench_dynamics.py
	OMP_NUM_THREADS=1 $(PY) bench/bench_fsdp.py

clean-demo:
	rm -rf data/crafter_tiny checkpoints/crafter_tiny

# The GPU path, offline, on a machine whose Python already holds a CUDA PyTorch (README, "Checking the GPU path"):
# the CUDA tests, then bench/gpu_bench.py. No .venv is made; GPU_PYTHON is this project's .venv Python when there is
# one, else python3. The project's other dependencies come from wheels/, made beforehand by `make gpu-wheels`
# where PyPI is reachable, for the GPU machine's Python version (GPU_PYVER).
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_PYVER ?= 3.12
GPU_WHEELS_ARGS ?=

gpu-check:
	PYTHON="$(GPU_PYTHON)" bash bench/gpu_check.sh

gpu-wheels:
	$(GPU_PYTHON) bench/gpu_wheels.py --dest wheels --python-version $(GPU_PYVER) $(GPU_WHEELS_ARGS)
