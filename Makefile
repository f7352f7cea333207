# storeshift.objstore — every setup step a user needs is done by these targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ROOT        := $(CURDIR)
VENV        := $(ROOT)/.venv
VENV219     := $(ROOT)/.venv219
COLL_ROOT   := $(ROOT)/.build/collections
COLL_LINK   := $(COLL_ROOT)/ansible_collections/storeshift/objstore
SANITY_TREE := $(ROOT)/.build/sanity/ansible_collections/storeshift/objstore
PY          := $(VENV)/bin/python
export PYTHONPATH := $(COLL_ROOT)
export ANSIBLE_COLLECTIONS_PATH := $(COLL_ROOT)
export PATH := $(VENV)/bin:$(PATH)

.PHONY: help venv venv219 link sanity-tree stack-up stack-down test unit unit219 integration sanity sanity219 lint molecule demo bench bench-smoke clean

help:
	@echo "make demo   - set everything up and run the cutover demo on the local stack"
	@echo "make test   - set everything up and run every test (unit, integration, molecule, sanity, lint)"
	@echo "make bench  - run the benchmark (see docs/performance.md)"

venv: $(VENV)/.installed
$(VENV)/.installed: requirements/dev.txt
	@bash tests/stack/find_python.sh 3.12 >/dev/null
	$$(bash tests/stack/find_python.sh 3.12) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements/dev.txt
	touch $@

venv219: $(VENV219)/.installed
$(VENV219)/.installed: requirements/ansible219.txt
	@bash tests/stack/find_python.sh 3.11 >/dev/null
	$$(bash tests/stack/find_python.sh 3.11) -m venv $(VENV219)
	$(VENV219)/bin/pip install -q --upgrade pip
	$(VENV219)/bin/pip install -q -r requirements/ansible219.txt
	touch $@

link:
	@mkdir -p $(dir $(COLL_LINK))
	@ln -sfn $(ROOT) $(COLL_LINK)

# ansible-test needs the tree laid out as ansible_collections/storeshift/objstore and outside
# any git work tree that ignores it; it is refreshed from the files git tracks or would track.
sanity-tree:
	@rm -rf $(ROOT)/.build/sanity-root && mkdir -p $(ROOT)/.build/sanity-root
	@tmp=$$(mktemp -d /tmp/objstore-sanity.XXXXXX) && \
	  mkdir -p $$tmp/ansible_collections/storeshift/objstore && \
	  git ls-files --cached --others --exclude-standard -z | \
	    xargs -0 -I{} cp --parents {} $$tmp/ansible_collections/storeshift/objstore/ 2>/dev/null; \
	  echo $$tmp > $(ROOT)/.build/sanity-root/path
	@bash tests/sanity/prime_get_pip.sh

stack-up: venv link
	$(PY) tests/stack/stack.py up

stack-down:
	@if [ -x $(PY) ]; then $(PY) tests/stack/stack.py down; fi

unit: venv link
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

integration: venv link
	$(PY) -m pytest -q -p no:cacheprovider tests/integration

unit219: venv219 link
	$(VENV219)/bin/python -m pytest -q -p no:cacheprovider tests/unit

sanity: venv sanity-tree
	cd $$(cat $(ROOT)/.build/sanity-root/path)/ansible_collections/storeshift/objstore && \
	  $(VENV)/bin/ansible-test sanity --python 3.12 --requirements --color no

sanity219: venv219 sanity-tree
	cd $$(cat $(ROOT)/.build/sanity-root/path)/ansible_collections/storeshift/objstore && \
	  PATH=$(VENV219)/bin:$$PATH $(VENV219)/bin/ansible-test sanity --python 3.11 --requirements --color no

lint: venv link
	$(VENV)/bin/ansible-lint --profile production

# Molecule 26 first looks for an optional 'default' scenario (shared state) and logs its absence as
# "CRITICAL 'extensions/molecule/default/molecule.yml' glob failed"; the three scenarios run regardless.
molecule: venv link
	set -a && . $(ROOT)/.stack/env && set +a && $(VENV)/bin/molecule test --all

bench-smoke: venv link
	$(PY) bench/bench.py --smoke
	$(PY) bench/ab.py --count 2 --size 1048576 --runs 1

bench: venv link stack-up
	$(PY) bench/bench.py

# The full suite: the stack is always brought down, even when a step fails.
test: venv venv219 link
	@rc=0; \
	$(MAKE) --no-print-directory stack-up || rc=1; \
	if [ $$rc -eq 0 ]; then \
	  for step in unit unit219 integration molecule bench-smoke sanity sanity219 lint; do \
	    echo "=== make $$step"; \
	    $(MAKE) --no-print-directory $$step || { echo "=== FAILED: make $$step"; rc=1; }; \
	  done; \
	fi; \
	$(MAKE) --no-print-directory stack-down; \
	exit $$rc

demo: venv link stack-up
	bash demo/demo.sh

clean: stack-down
	rm -rf .build .venv .venv219 .stack
