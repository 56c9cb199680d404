# Quick start: `make demo`, `make test`. Everything installs into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BASE := $(VENV)/.installed-base

.PHONY: demo up test check lint typecheck unit bench clean docker-engine ohif

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Two installs: the package alone for `make demo` / `make up` (what a first try needs), and the package with
# every extra for the tests, the load tests and Docker. The full one implies the base one.
$(BASE): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $(BASE)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,load,docker]'
	touch $(BASE) $(STAMP)

demo: $(BASE)
	$(BIN)/xcwado demo

up: $(BASE)
	$(BIN)/xcwado up --state run/state.json

# System tools the tests use (Debian): dciodvfy, Orthanc + DICOMweb plugin, nginx, docker-compose, gcc,
# chromium (headless, renders the HTML report and runs the OHIF viewer), npm (fetches the OHIF bundle),
# xmlsec1 (tests/xds/test_xua.py: an independent XML-signature verifier).
system-deps:
	@command -v dciodvfy >/dev/null && command -v Orthanc >/dev/null && command -v nginx >/dev/null \
	  && command -v docker-compose >/dev/null && command -v gcc >/dev/null && command -v chromium >/dev/null \
	  && command -v npm >/dev/null && command -v xmlsec1 >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      dicom3tools orthanc orthanc-dicomweb nginx-light docker-compose gcc chromium npm xmlsec1 >/dev/null; }

# The OHIF Viewer 2 prebuilt bundle that tests/viewer serves (npm checks the registry's integrity hash);
# cached under .cache/ (git-ignored), never committed. The version is also tests/viewer/ohif_harness.py's.
OHIF_VERSION := 4.12.51
OHIF_DIR := .cache/ohif/$(OHIF_VERSION)
$(OHIF_DIR)/package/dist/index.umd.js:
	@command -v npm >/dev/null || $(MAKE) system-deps
	rm -rf $(OHIF_DIR) $(OHIF_DIR).part && mkdir -p $(OHIF_DIR).part
	cd $(OHIF_DIR).part && npm pack --silent @ohif/viewer@$(OHIF_VERSION) >/dev/null \
	  && tar xzf ohif-viewer-$(OHIF_VERSION).tgz && rm ohif-viewer-$(OHIF_VERSION).tgz
	mv $(OHIF_DIR).part $(OHIF_DIR)  # complete or absent: an interrupted fetch is not a bundle
ohif: $(OHIF_DIR)/package/dist/index.umd.js

lint: $(STAMP)
	$(BIN)/ruff check ncp tests $(wildcard scenarios loadtests)
	$(BIN)/mypy

# The Docker engine for the `docker` tests: installs docker.io, docker-compose, debootstrap; starts dockerd
# (no bridge, no iptables) unless an engine answers.
docker-engine:
	bash .ci/docker-setup

# Everything in five workers on the two cores (pytest-xdist, one test file per worker: a file's module
# fixtures stay in one process; much of the suite waits on processes, browsers and sockets, so more workers
# than cores fill them: 293 s with three, 258 s with four, 237 s with five, docs/test-times.md), then the
# `serial` tests alone (tests/conftest.py).
test: $(STAMP) system-deps docker-engine ohif lint
	$(BIN)/pytest -q -m "not serial" -n 5 --dist loadfile --durations=20
	$(BIN)/pytest -q -m serial --durations=5

# The fast tier: lint, types and every test that starts no federation, subprocess, Docker, Orthanc or
# browser (the `integration` marker, tests/conftest.py), one test file per worker on both cores.
check: $(STAMP) lint
	$(BIN)/pytest -q -m "not integration" -n 2 --dist loadfile --durations=10

bench: $(STAMP)
	$(BIN)/python -m ncp.bench

fuzz: $(STAMP)
	$(BIN)/python -m ncp.fuzz --requests 10000

# Bounded soak test (docs/soak.md): exits non-zero unless every role's RSS is flat and no request failed.
SOAK_MINUTES ?= 30
SOAK_CLIENTS ?= 16
.PHONY: soak
soak: $(STAMP)
	$(BIN)/python -m ncp.soak --minutes $(SOAK_MINUTES) --clients $(SOAK_CLIENTS)

# Images (README "Docker"). `make docker-base`: xcwado-base:bookworm made by debootstrap from the mirror the
# host's apt uses (root; for hosts without registry access). `make docker`: the wheelhouse built on the host,
# then xcwado-testbed:latest and xcwado-orthanc:latest, reused when nothing changed. DOCKER_BASE=auto takes
# xcwado-base:bookworm, else python:3.11-slim-bookworm, whichever is here (nothing is pulled).
DOCKER_BASE ?= auto
.PHONY: docker-base docker
docker-base: $(STAMP)
	@$(BIN)/python -c 'import docker' 2>/dev/null || $(BIN)/pip install -q -e '.[docker]'
	$(BIN)/python -m ncp.containers base
docker: $(STAMP)
	@$(BIN)/python -c 'import docker' 2>/dev/null || $(BIN)/pip install -q -e '.[docker]'
	$(BIN)/python -m ncp.containers build --base $(DOCKER_BASE)

clean:
	rm -rf $(VENV) run .pytest_cache .mypy_cache
