# kvm.snapshots developer entry points. See tests/setup.sh and tests/run.sh.
#   make test                      setup, then sanity + units + integration + oldest + lint + package
#   make sanity [SANITY_TEST=pep8]
#   make units  [UNITS=tests/unit/plugins/modules/test_x.py]
#   make integration [TARGET=harness_smoke]
#   make oldest [OLDEST_TARGET=roles]   units + one target on the oldest ansible-core (.venv-oldest)
#   make bench [CASES=4,5] [QUICK=1] [BENCH_ARGS=...]   benchmark (issue 6), not part of make test
#   make counts                    what the integration case tables hold (for the docs)
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := $(CURDIR)/.venv
# outside the git work tree (ansible-test would find .git above it otherwise)
BUILD_DIR   ?= $(or $(TMPDIR),/tmp)/kvm.snapshots-build/$(shell printf '%s' '$(CURDIR)' | sha256sum | cut -c1-12)
COLL_DIR    := $(BUILD_DIR)/ansible_collections/kvm/snapshots
RUN         := BUILD_DIR="$(BUILD_DIR)" bash tests/run.sh
TARGET      ?=
SANITY_TEST ?=
UNITS       ?=
export TARGET SANITY_TEST UNITS

.PHONY: help setup test sanity units integration oldest lint package build demo bench counts clean distclean

help:
	@echo "targets: setup test sanity units integration lint build demo bench counts clean distclean"
	@echo "  TARGET=name (integration), SANITY_TEST=name (sanity), UNITS=path (units)"

setup:
	bash tests/setup.sh

test: setup
	$(RUN) sanity units integration oldest lint package

sanity: setup
	$(RUN) sanity

units: setup
	$(RUN) units

integration: setup
	$(RUN) integration

oldest: setup
	$(RUN) oldest

lint: setup
	$(RUN) lint

package: setup
	$(RUN) package

build: setup
	$(RUN) build

demo: build
	cd "$(COLL_DIR)" && ANSIBLE_COLLECTIONS_PATH="$(BUILD_DIR)" \
		"$(VENV)/bin/ansible-playbook" playbooks/demo.yml $(DEMO_ARGS)

bench: setup
	"$(VENV)/bin/python" tests/bench/run.py $(BENCH_ARGS)

counts:
	$(RUN) counts

clean:
	rm -rf "$(BUILD_DIR)" tests/output .pytest_cache kvm-snapshots-*.tar.gz
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf .venv
