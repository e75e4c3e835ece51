# credit-grants: `make run` starts both services on SQLite; `make test` runs every test
# on SQLite and on a PostgreSQL server it starts itself. Both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
INSTALLED := $(VENV)/.installed
PROTOS := $(sort $(shell find protos -name '*.proto'))
GENERATED := catalog_service/v1/catalog_service_pb2.py grant_service/v1/grant_service_pb2.py \
  credit_grants/v1/options_pb2.py \
  catalog_service/v1/catalog_service.binpb grant_service/v1/grant_service.binpb credit_grants/v1/options.binpb
PYTEST_ARGS ?=
BENCH_ARGS ?=
DATA ?= data

.PHONY: help setup protos run test lint bench demo clean

help:
	@echo "make run    - set up and start both services on SQLite (catalog :50051, grant :50052)"
	@echo "make test   - set up and run every test on SQLite and PostgreSQL"
	@echo "make lint   - ruff + buf lint + no float/double in protos"
	@echo "make demo   - run the story against running services (start them with make run; DEMO_ARGS=--catalog/--grant)"
	@echo "make bench  - load benchmarks on SQLite and PostgreSQL (BENCH_ARGS='--size small')"
	@echo "make protos - regenerate the Python stubs from protos/"
	@echo "make clean  - remove the virtualenv, generated stubs and local data"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(PY)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

$(GENERATED) &: $(PROTOS) $(INSTALLED)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)
	@# each file's descriptors with their comments, for server reflection (credit_common/grpc/documented_pool.py)
	@for proto in $(PROTOS); do \
	  out=$${proto#protos/}; $(PY) -m grpc_tools.protoc -Iprotos --include_source_info --descriptor_set_out=$${out%.proto}.binpb $$proto; \
	done
	@touch $(GENERATED)

setup: $(GENERATED)

protos: setup

# Development keys ($(DATA)/*.key, mode 0600) are created once and reused while the databases accept them.
# Ctrl-C stops both services and ends without an error (the traps' kill and wait never fail).
run: setup
	@mkdir -p -m 700 $(DATA)
	@$(PY) -m grant_service migrate --log-level WARNING && $(PY) -m catalog_service migrate --log-level WARNING
	@set -e; \
	grant_key=$$($(PY) -m grant_service keys ensure --role admin --label dev-admin --file $(DATA)/grant-admin.key); \
	catalog_key=$$($(PY) -m catalog_service keys ensure --role admin --label dev-admin --file $(DATA)/catalog-admin.key); \
	sync_key=$$($(PY) -m grant_service keys ensure --role sync --label catalog-sync --file $(DATA)/catalog-sync.key); \
	echo "API keys (admin; kept in $(DATA)/*.key; see docs/security.md):"; \
	echo "  grant service   (50052): $$grant_key"; \
	echo "  catalog service (50051): $$catalog_key"; \
	echo "  the catalog's sync key of the grant service: $(DATA)/catalog-sync.key"; \
	trap 'kill $$(jobs -p) 2>/dev/null || true; wait || true; exit 0' INT TERM; \
	trap 'kill $$(jobs -p) 2>/dev/null || true' EXIT; \
	GRANT_ENABLE_TEST_CLOCKS=$${GRANT_ENABLE_TEST_CLOCKS:-true} $(PY) -m grant_service serve --migrate & \
	CATALOG_GRANT_SERVICE_API_KEY=$$sync_key $(PY) -m catalog_service serve --migrate & \
	wait

test: setup
	$(PY) -m pytest -n 2 --dist load $(PYTEST_ARGS)

demo: setup
	$(PY) scripts/demo.py $(DEMO_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/buf lint protos
	@! grep -nE '^\s*(repeated\s+)?(float|double)\s' $(PROTOS) || (echo "float/double found in protos" && false)

bench: setup
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache .hypothesis
	find . \( -name '*_pb2*.py*' -o -name '*.binpb' \) -not -path './.git/*' -not -path './$(VENV)/*' -delete
