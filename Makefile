# Every set-up step lives here, so a fresh clone (and CI) needs nothing but python3.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
EXTRAS ?= postgres,tables,mlflow,fraud,serving,grpc,k8s,deploy,torch,server,monitoring,docs,s3,gpu,llm,mcp,dev
# PyTorch's CPU build, installed by pip before uv resolves the extras (which then finds it
# satisfied): uv would otherwise fetch the default, CUDA-bundling wheel. pip takes the local
# wheel where one is configured (PIP_FIND_LINKS), else the index's.
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=
comma := ,

.PHONY: install demo demo-install test test-fast test-deep lint fmt clean services browser prometheus tools chart images test-images docs

$(UV):
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv

TORCH_STAMP := $(VENV)/.torch-$(TORCH_VERSION)
$(TORCH_STAMP): | $(UV)
	$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	touch $@

# Re-installs when pyproject.toml, this Makefile or the extras change. PyTorch's CPU wheel is
# installed first only when the extras ask for it (the demo's do not).
STAMP := $(VENV)/.installed
$(STAMP): pyproject.toml Makefile $(if $(findstring torch,$(EXTRAS)),$(TORCH_STAMP)) | $(UV)
	$(UV) pip install -q --compile-bytecode --python $(BIN)/python -e '.[$(EXTRAS)]'
	$(BIN)/python -m compileall -q src >/dev/null
	echo '$(EXTRAS)' > $@

install: $(STAMP)
	@[ "$$(cat $(STAMP))" = '$(EXTRAS)' ] || { rm -f $(STAMP); $(MAKE) --no-print-directory $(STAMP); }

# checkov (the security scan of the Dockerfile and the Helm chart's manifests, tests/deploy) lives
# in a virtual environment of its own: it pins old networkx and packaging, which would downgrade
# what torch and mlflow need. tests/deploy finds it at $(CHECKOV_VENV)/bin/checkov.
CHECKOV_VERSION ?= 3.3.30
CHECKOV_VENV := $(VENV)/tools/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
$(CHECKOV_STAMP): | $(UV)
	$(PY) -m venv --without-pip $(CHECKOV_VENV)
	$(UV) pip install -q --python $(CHECKOV_VENV)/bin/python checkov==$(CHECKOV_VERSION)
	touch $@

tools: $(CHECKOV_STAMP)

# The fraud pipeline end to end on embedded defaults (SQLite + files + MLflow under ./.usina),
# then the champion served. It needs only these extras (no PyTorch, no test tools): a fresh
# clone gets a lean .venv; a .venv that `make test` already filled is used as it is.
DEMO_EXTRAS ?= tables,mlflow,fraud,serving,grpc
demo-install:
	@if [ -f $(STAMP) ] && for e in $(subst $(comma), ,$(DEMO_EXTRAS)); do \
	    grep -q "\(^\|,\)$$e\(,\|$$\)" $(STAMP) || exit 1; done; then :; \
	  else $(MAKE) --no-print-directory install EXTRAS=$(DEMO_EXTRAS); fi

demo: demo-install
	$(BIN)/python examples/fraud/demo.py

services:
	@bash scripts/services.sh

browser:
	@bash scripts/browser.sh

# Prometheus and promtool for tests/monitoring (Debian's package; a no-op when installed).
prometheus:
	@bash scripts/prometheus.sh

# Durations of the slowest 25 tests are printed; JUnit XML goes to test-output/ (git-ignored).
TEST_OUTPUT ?= test-output
test: install tools services browser prometheus
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest --durations=25 --junitxml=$(TEST_OUTPUT)/junit.xml $(PYTEST_ARGS)

# The quick loop: the unit and contract tiers (tests/conftest.py marks tiers by folder), 30 s
# per test at most, no CLI subprocesses or servers of their own (tests/conftest.py RETIERED).
# Needs only PostgreSQL (the SQL store contract).
test-fast: install services
	@start=$$(date +%s); \
	$(BIN)/python -m pytest -q tests/unit tests/contract -m 'unit or contract' \
	  --timeout=30 --durations=5 $(PYTEST_ARGS); rc=$$?; \
	echo "make test-fast: $$(( $$(date +%s) - start )) s"; exit $$rc

# The fuzz suites (Hypothesis) with ten times their examples (tests/conftest.py, USINA_FUZZ).
test-deep: install services
	USINA_FUZZ=deep $(BIN)/python -m pytest --durations=25 \
	  tests/serving/test_serving_fuzz.py tests/server/test_schema.py $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# The Helm chart and the Dockerfile, as tests/deploy checks them (also part of `make test`):
# Helm's Go SDK renders and lints the chart (strict), every object is validated against the
# Kubernetes and CRD schemas, checkov and hadolint scan the manifests and the Dockerfile.
chart: install tools
	$(BIN)/python -m pytest tests/deploy -q -p no:cacheprovider

# The three images, built from the one Dockerfile with buildah (no Docker engine, no registry
# needed): scripts/podman-setup.sh installs podman/buildah/runc/mmdebstrap and makes the local
# Debian base used when python:X-slim cannot be pulled; scripts/build-images.sh builds, prints
# the sizes and checks their budgets. Names match the chart: IMAGE_PREFIX=registry/org/ to change.
IMAGE_PREFIX ?= ghcr.io/usina-ml/
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
images:
	IMAGE_PREFIX='$(IMAGE_PREFIX)' VERSION='$(VERSION)' REVISION='$(REVISION)' \
	  TORCH_VERSION='$(TORCH_VERSION)' bash scripts/build-images.sh

# Steps, the server and serving run in the built images under podman with real cgroup limits
# (tests/images, left out of `make test`): needs root, podman (scripts/podman-setup.sh) and
# `make images`.
test-images: install services images
	USINA_IMAGE_TESTS=1 $(BIN)/python -m pytest tests/images -p no:cacheprovider $(PYTEST_ARGS)

# The documentation site (MkDocs Material) into site/, strict: a broken link, a missing page or an
# unresolved API reference fails. The reference pages are regenerated from the code first.
docs: install
	$(BIN)/python scripts/gen_docs.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q

fmt: install
	$(BIN)/ruff format src tests examples benchmarks
	$(BIN)/ruff check --fix src tests examples benchmarks

clean:
	rm -rf $(VENV) .usina .pytest_cache .mypy_cache .ruff_cache $(TEST_OUTPUT)
