# The two quickstart commands: `make pipeline` and `make test`.
SHELL := /bin/bash
VENV := .venv/bin
export PATH := $(CURDIR)/$(VENV):$(PATH)
export TOKENIZERS_PARALLELISM := false
# Let Python cache the bytecode of what it imports (setup installs with --no-compile): with
# PYTHONDONTWRITEBYTECODE set, as on some CI images, each of the pipeline's ~30 stage
# processes recompiled pandas, torch and transformers from source (~3 s a light stage).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup setup-dev pipeline test

# What the pipeline needs; setup-dev adds tests, lint, Ray and headless Chromium.
setup:
	@bash scripts/setup.sh

setup-dev:
	@bash scripts/setup.sh dev

# Set up, then run the whole pipeline on the bundled sample with the bundled model.
pipeline: setup
	dvc repro
	python scripts/results.py

# Set up (with the test tools), then lint and run every test (slow end-to-end tests included).
# One worker per core, at most 4 (each test may hold a model and a DVC project); a file's
# tests share one worker, so its module fixtures (a whole pipeline run) are built once.
# Measured on 2 cores: 1359 s against ~1850 s in one process.
test: setup-dev
	ruff check .
	python -m pytest -n auto --maxprocesses 4 --dist loadfile
