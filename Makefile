# ringcache: `make run` serves the demo, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test proto bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ringcache needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/ringcache up -c topology.yaml

test: install
	$(BIN)/python -m pytest -q

# Regenerate the wire module from its schema (tests/test_proto.py checks it is current).
proto: install
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. shared/ringcache.proto

bench: install
	$(BIN)/python bench/cores.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
