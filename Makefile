# Quick start: `make demo`, `make test`. Everything installs into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo up test lint typecheck unit bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,load]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/xcwado demo

up: $(STAMP)
	$(BIN)/xcwado up --state run/state.json

# System tools the tests use (Debian): dciodvfy, Orthanc + DICOMweb plugin, nginx, docker-compose, gcc,
# chromium (headless, renders the HTML report).
system-deps:
	@command -v dciodvfy >/dev/null && command -v Orthanc >/dev/null && command -v nginx >/dev/null \
	  && command -v docker-compose >/dev/null && command -v gcc >/dev/null && command -v chromium >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      dicom3tools orthanc orthanc-dicomweb nginx-light docker-compose gcc chromium >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check ncp tests $(wildcard scenarios loadtests)
	$(BIN)/mypy

test: $(STAMP) system-deps lint
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m ncp.bench

clean:
	rm -rf $(VENV) run .pytest_cache .mypy_cache
