# One virtual environment for everything; the first target that needs it creates it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast bench bench-smoke crd venv clean

venv: $(VENV)/.installed

# torch 2.14.1 / torchvision 0.29.1: the pair this machine's wheel store holds (timm needs torchvision)
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[jobs,operator,test,bench]'
	touch $@

## the main job: a local evaluation of pnasnet5large on generated sample images
demo: venv
	$(BIN)/pnas-eval demo examples/local.yaml

## the whole test suite (the slow real-model tests included)
test: venv
	$(BIN)/pytest

## everything but the real pnasnet5large tests
test-fast: venv
	$(BIN)/pytest -m "not slow"

bench: venv
	$(BIN)/python -m benchmarks

bench-smoke: venv
	$(BIN)/python -m benchmarks --smoke

## regenerate the CRD (and the chart's copy) from the spec model
crd: venv
	$(BIN)/pnas-eval crd --write crds/pnaseval.yaml --write charts/pnas-eval/crds/pnaseval.yaml

clean:
	rm -rf demo runs benchmarks/work
