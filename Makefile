# Every target that runs code first does the set-up it needs: a virtual
# environment at .venv, the package installed into it, code generated from protos/.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PROTOS    := $(shell find protos -name '*.proto')
GENERATED := src/memsim/.generated

.PHONY: install protos run test lint bench clean

install: $(INSTALLED) $(GENERATED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(GENERATED): $(INSTALLED) $(PROTOS) scripts/gen_protos.py
	$(BIN)/python scripts/gen_protos.py --out src
	touch $@

protos: $(INSTALLED)
	$(BIN)/python scripts/gen_protos.py --out src
	touch $(GENERATED)

run: install
	$(BIN)/memsim up --demo

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(GENERATED) build .pytest_cache .mypy_cache .ruff_cache
	find src -path '*/v1/*_pb2*' -delete
