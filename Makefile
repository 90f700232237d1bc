# One set of tools: the README and .ci/run use these targets.
#   make demo     install, then run the embedded default (local Ray, synthetic videos, tiny offline VLM)
#   make test     install, then lint and run the whole test suite
#   make test-vllm  the vLLM backend, serve engine and sampling tests on vLLM's CPU build, in .venv-vllm
#   make bench    decode, frame store, verify, generate, train and serve benchmarks (print tables)
# On a GPU machine: make install CONSTRAINTS= EXTRAS=test,gpu   (no CPU torch pin; adds vLLM)

PYTHON      ?= python3
VENV        ?= .venv
CONSTRAINTS ?= constraints/cpu.txt
EXTRAS      ?= test
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.installed
PIP_C       := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)

export HF_HUB_OFFLINE ?= 1
export RAY_AUTH_MODE ?= disabled

.PHONY: install demo test test-hostile test-vllm lint format bench clean

install: $(STAMP)

# torch first and pinned: any resolve without it would pull a multi-GB CUDA build on a CPU machine.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(if $(CONSTRAINTS),$(BIN)/python -m pip install -q $(PIP_C) torch,)
	$(BIN)/python -m pip install -q $(PIP_C) -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: install
	$(BIN)/vstar run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest

# Hostile input and shrinking clusters (issue 27), alone; `make test` runs them too.
test-hostile:
	$(BIN)/python -m pytest -m hostile

# The vLLM backend on vLLM's CPU build, in its own environment (about 3 min to build, 4 GB).
test-vllm:
	test -f .venv-vllm/.ready || (bash .ci/vllm_env.sh .venv-vllm && touch .venv-vllm/.ready)
	VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=1 \
	    .venv-vllm/bin/python -m pytest -m vllm -p no:cacheprovider tests/test_vllm_backend.py tests/test_serve.py tests/test_sampling.py

bench: install
	$(BIN)/python benchmarks/decode.py
	$(BIN)/python benchmarks/frame_store.py
	$(BIN)/python benchmarks/verify.py
	$(BIN)/python benchmarks/generate.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/serve.py

clean:
	rm -rf $(VENV) .venv-vllm runs .pytest_cache .ruff_cache
