# One virtual environment for everything; the first target that needs it creates it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast bench bench-smoke crd venv clean system-packages

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

# Debian packages some test tiers use: Chromium (the run report in a real browser) and Ceph's RADOS
# Gateway (the real-S3 tier). Best effort: without them (not root, no apt) those tests skip and say why.
SYSTEM_PACKAGES := chromium ceph-mon ceph-osd radosgw ceph-common
system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $$missing (apt-get)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) \
			|| echo "could not install $$missing: the tests that need them will skip"; \
	else echo "not root or no apt-get: $$missing missing, the tests that need them will skip"; fi

## the whole test suite (the slow real-model tests included)
test: venv system-packages
	$(BIN)/pytest

## everything but the real pnasnet5large tests
test-fast: venv system-packages
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
