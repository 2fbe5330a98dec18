# Nightshift: `make run` brings the platform up and runs the main job; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt constraints.txt | sha1sum | cut -c1-12)

.PHONY: help venv browser run up down logs status env test test-fast bench lint format lock clean

help:
	@echo "make run     bring up Postgres, MLflow and Airflow; run the training DAG end to end"
	@echo "make test    lint (ruff, mypy) and run the whole test suite"
	@echo "make down    stop everything 'make run' started"
	@echo "make logs    where the logs are"
	@echo "make status  which services are running"
	@echo "make bench   benchmarks (ROWS=1000000): scoring vs to_sql, predict-only and raw COPY;"
	@echo "             drift on a seeded sample vs Evidently on every row; the nightly path at 1M and 10M"
	@echo "             rows through the real scheduler (own stack in .local-bench) and training memory"

$(STAMP): requirements.txt constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

run: venv
	$(PY) -m scripts.stack run

up: venv
	$(PY) -m scripts.stack up

down:
	@if [ -x $(PY) ]; then $(PY) -m scripts.stack down; fi

ROWS ?= 1000000
RSS_ROWS ?= 5000000
bench: venv
	$(PY) -m bench.scoring --rows $(ROWS) --rss-rows $(RSS_ROWS)
	$(PY) -m bench.drift --rows $(ROWS)
	$(PY) -m bench.nightly

logs:
	@$(PY) -m scripts.stack logs

status:
	@$(PY) -m scripts.stack status

env:
	@$(PY) -m scripts.stack env

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Debian's Chromium and ChromeDriver, for the test of the Nightshift page in the Airflow UI; installed
# when missing (as root, or through sudo).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); export DEBIAN_FRONTEND=noninteractive; \
	  echo "installing Debian's chromium and chromium-driver for the UI test"; \
	  $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null \
	  || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null; }; \
	fi

test: venv lint browser
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not e2e"

lock: venv
	{ echo "# Full lock of the environment requirements.txt resolves to (pip freeze). Regenerate: make lock"; \
	  $(PY) -m pip freeze; } > constraints.txt

clean: down
	rm -rf .local .local-* .pytest_cache .ruff_cache
