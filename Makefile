# The two commands of a fresh machine (Python 3.11 only):  make demo   and   make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is installed first and pinned, so nothing that depends on it can pull a CUDA build on a CPU machine.
# A GPU machine installs its CUDA build instead, e.g.  make test TORCH="torch==2.13.0 --index-url <CUDA wheel index>"
TORCH  ?= torch==2.13.0

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The main job: audit small_cnn on the embedded mnist5k (trained on first use) with the quick plan;
# the last line printed is where the report is.
demo: $(BIN)/.installed
	$(BIN)/bastion audit

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
	rm -rf $(VENV) checkpoints runs bastion.db .pytest_cache .ruff_cache
