# The two commands of the README: `make demo` (the main job) and `make test` (the whole suite).
# Each creates or refreshes the virtual environment .venv from the project's own files first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.zsindex-installed

.PHONY: demo test test-slow soak fuzz lint bench venv clean gpu-check

$(STAMP): pyproject.toml setup.py zsindex/index/_f16scan.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/zsindex demo

# Lint, type-check and the fast test tier on SQLite and the local PostgreSQL (required, not skipped).
test: $(STAMP)
	bash scripts/ensure_postgres.sh
	bash scripts/ensure_chromium.sh
	bash scripts/ensure_haproxy.sh
	$(BIN)/ruff check zsindex migrations tests benchmarks scripts
	$(BIN)/ruff format --check zsindex migrations tests benchmarks scripts
	$(BIN)/mypy
	ZSINDEX_REQUIRE_POSTGRES=1 ZSINDEX_REQUIRE_BROWSER=1 ZSINDEX_REQUIRE_HAPROXY=1 \
		$(BIN)/pytest -q -p no:cacheprovider

# Long soak / fuzz / crash runs (not in CI's time budget; run before a release).
test-slow: $(STAMP)
	bash scripts/ensure_postgres.sh
	bash scripts/ensure_haproxy.sh
	ZSINDEX_REQUIRE_POSTGRES=1 ZSINDEX_REQUIRE_HAPROXY=1 $(BIN)/pytest -q -p no:cacheprovider -m slow

soak: test-slow

# Coverage-guided fuzzing of image decode + preprocess (atheris), 60 s by default;
# e.g. `make fuzz FUZZ_ARGS=-max_total_time=600`.
fuzz: $(STAMP)
	$(BIN)/python scripts/fuzz_images.py $(FUZZ_ARGS)

# The GPU paths, on a machine with a CUDA GPU (at most 8 minutes): a FAISS GPU build for the
# CUDA present (into .gpu-check/, the venv untouched), the `gpu` tests, and the GPU section of
# benchmarks/RESULTS.md. Without a GPU it says so and exits 0. E.g. GPU_CHECK_ARGS=--no-bench.
gpu-check: $(STAMP)
	$(BIN)/python scripts/gpu_check.py $(GPU_CHECK_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check zsindex migrations tests benchmarks scripts
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build dist *.egg-info
