# ringcache: `make run` serves the demo, `make test` runs every test, `make test-unit` the
# unit tests alone (no processes, under a minute).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-unit proto bench bench-vs-twemproxy clean system-deps build-deps debian-packages

# Debian packages the integration tests run for real: origin servers for the sources,
# memcached and libmemcached's tools to hold the router to, etcd for a topology kept in
# etcd (etcdctl writes into it "by other means" than ringcache's own CLI), a headless
# browser for the status page, the curl and nc the README's commands use, and ss
# (iproute2) to read listen backlogs.
TEST_PACKAGES := redis-server redis-tools postgresql mariadb-server openssl \
                 memcached libmemcached-tools etcd-server etcd-client \
                 chromium chromium-driver curl netcat-openbsd iproute2
# What the install compiles with: the compiled twins (gcc) and pylibmc (the test extra).
BUILD_PACKAGES := gcc libmemcached-dev zlib1g-dev

install: $(STAMP)

# setup.py and the C sources too: the compiled twins are built by the install. Build
# packages first: pylibmc (test extra) compiles against libmemcached-dev.
$(STAMP): pyproject.toml setup.py shared/_codec.c shared/_codec.h router/dataplane/_getrun.c \
          storage_node/cores/_adaptive.c | build-deps
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ringcache needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/ringcache up -c topology.yaml

test: install system-deps
	$(BIN)/python -m pytest -q --ignore=tests/deploy

# The fast loop: no processes, no sockets, no Debian packages (tests/conftest.py holds
# every unit test to that).
test-unit: install
	$(BIN)/python -m pytest -q tests/router tests/storage_node tests/shared tests/test_layout.py

# Installs what is missing when run as root on Debian; otherwise names it (the tests
# that need a package fail naming it too).
system-deps:
	@$(MAKE) --no-print-directory debian-packages PACKAGES="$(TEST_PACKAGES)" WHAT="the tests"

build-deps:
	@$(MAKE) --no-print-directory debian-packages PACKAGES="$(BUILD_PACKAGES)" WHAT="the install"

debian-packages:
	@missing=$$(for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages for $(WHAT):" $$missing; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "$(WHAT) need these Debian packages:" $$missing; \
	fi

# Regenerate the wire module from its schema (tests/shared/test_proto.py checks it is current).
proto: install
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. shared/ringcache.proto

bench: install
	$(BIN)/python bench/cores.py

# Side by side with twemproxy + memcached (installs them with apt-get when run as root).
bench-vs-twemproxy: install
	$(BIN)/python bench/vs_twemproxy.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# The container image, built with no image registry reachable (see deploy/build-image.sh).
.PHONY: docker-image test-deploy
docker-image:
	PYTHON=$(PYTHON) bash deploy/build-image.sh

# The compose cluster for real: builds the image, runs four containers, kills and cuts off nodes.
test-deploy: install
	$(BIN)/python -m pytest -q tests/deploy
