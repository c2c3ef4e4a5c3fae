# The two commands of a fresh machine (Python 3.11 only):  make demo   and   make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is installed first and pinned, so nothing that depends on it can pull a CUDA build on a CPU machine.
# A GPU machine installs its CUDA build instead, e.g.  make test TORCH="torch==2.13.0 --index-url <CUDA wheel index>"
TORCH  ?= torch==2.13.0
DEMO_CKPT := checkpoints/small_cnn-mnist5k-standard.safetensors

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The main job: train (or reuse) small_cnn on the embedded mnist5k, then evaluate it.
demo: $(DEMO_CKPT)
	$(BIN)/bastion eval --checkpoint $(DEMO_CKPT) --json runs/eval.json
	@echo "result: runs/eval.json"

$(DEMO_CKPT): | $(BIN)/.installed
	$(BIN)/bastion train --model small_cnn --data mnist5k --out $@

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

# pytest exits 5 when it collects no test: make treats that as the failure it is.
test: lint
	$(BIN)/python -m pytest

# Timings: run on a quiet machine. setup_peers.sh installs the peer libraries (benchmark-only) into $(VENV).
bench: $(BIN)/.installed
	$(BIN)/python benchmarks/train_mnist5k.py
	VENV=$(VENV) bash benchmarks/setup_peers.sh
	$(BIN)/python benchmarks/evasion_peers.py

clean:
	rm -rf $(VENV) checkpoints runs .pytest_cache .ruff_cache
