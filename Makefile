# The two commands: `make demo` and `make test` (see README.md; the rest of the docs are in docs/). Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat requirements.txt constraints.txt pyproject.toml | sha1sum | cut -c1-12)
# Superset pins Flask/SQLAlchemy versions Airflow cannot share: it gets a virtualenv of its own.
SUPERSET_VENV := .venv-superset
SUPERSET_STAMP := $(SUPERSET_VENV)/.installed-$(shell cat requirements-superset.txt | sha1sum | cut -c1-12)

.PHONY: install lint test test-unit test-fast demo screenshots bench-ingest bench-chain bench-forget bench-kafka-storage stack-up stack-down stack-status lock schemas clean

install: $(STAMP) $(SUPERSET_STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@bash scripts/install-system.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "python packages: installing into $(VENV) (once; re-runs skip this)"
	@$(PIP) install -q --upgrade pip
	@$(PIP) install -q -r requirements.txt -c constraints.txt
	@$(PIP) install -q --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

$(SUPERSET_STAMP): requirements-superset.txt
	@bash scripts/install-system.sh
	@test -x $(SUPERSET_VENV)/bin/python || $(PYTHON) -m venv $(SUPERSET_VENV)
	@echo "superset: installing into $(SUPERSET_VENV) (once; re-runs skip this)"
	@$(SUPERSET_VENV)/bin/pip install -q --upgrade pip
	@$(SUPERSET_VENV)/bin/pip install -q -r requirements-superset.txt
	@rm -f $(SUPERSET_VENV)/.installed-* && touch $@

lint: install  ## ruff (lint and format), mypy, and no import cycles
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) scripts/check_import_cycles.py

# Test files run on TEST_WORKERS workers (pytest-xdist), each with its own private stack: most of
# the suite waits on services and timeouts, not on the CPU. TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 3

test: install  ## the whole suite against real local services (the fixtures start them)
	$(VENV)/bin/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-unit: install  ## the unit tests only: no services, seconds
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/unit $(PYTEST_ARGS)

test-fast: install  ## everything but the slow fault-injection tests
	$(VENV)/bin/pytest -q -m "not slow" $(PYTEST_ARGS)

demo: install  ## start the stack, simulate traffic, ingest it, print a summary
	@bash scripts/demo.sh

screenshots: install  ## refresh docs/img/ (dashboard, Airflow runs) from the running stack, after `make demo`
	$(PY) -m sentencify.dashboard.screenshot

bench-ingest: install  ## consumer vs raw and naive baselines (not part of `make test`)
	$(PY) -m bench.ingest $(BENCH_ARGS)

bench-forget: install  ## erase one user with 10,000 records among 100,000 sessions (not part of `make test`)
	$(PY) -m bench.forget $(BENCH_ARGS)

bench-chain: install  ## window cost vs history, rebuild and vector-migration speed (not part of `make test`)
	$(PY) -m bench.chain $(BENCH_ARGS)

bench-kafka-storage: install  ## the durable local Kafka's CPU (drain, idle consumer) vs tansu in memory (not part of `make test`)
	$(PY) -m bench.kafka_storage $(BENCH_ARGS)

stack-up: install
	$(VENV)/bin/sentencify stack up
stack-down:
	$(VENV)/bin/sentencify stack down
stack-status:
	$(VENV)/bin/sentencify stack status

schemas: install  ## refresh docs/schemas/ (JSON Schema for producers)
	$(VENV)/bin/sentencify schemas --out docs/schemas

lock:  ## re-resolve constraints.txt from requirements.txt in a scratch venv
	rm -rf /tmp/sentencify-lock && $(PYTHON) -m venv /tmp/sentencify-lock
	/tmp/sentencify-lock/bin/pip install -q -r requirements.txt
	/tmp/sentencify-lock/bin/pip freeze > constraints.txt

clean: stack-down
	rm -rf $(VENV) $(SUPERSET_VENV) .stack
