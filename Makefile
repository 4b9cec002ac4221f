# The two quickstart commands: `make pipeline` and `make test`.
SHELL := /bin/bash
VENV := .venv/bin
export PATH := $(CURDIR)/$(VENV):$(PATH)
export TOKENIZERS_PARALLELISM := false

.PHONY: setup pipeline test lint

setup:
	@bash scripts/setup.sh

# Set up, then run the whole pipeline on the bundled sample with the bundled model.
pipeline: setup
	dvc repro
	dvc metrics show

# Set up, then lint and run every test (slow end-to-end tests included).
test: setup
	ruff check .
	python -m pytest
