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

.PHONY: help venv venv219 link stack-up stack-down test unit integration sanity sanity219 unit219 lint molecule demo bench bench-smoke clean

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
