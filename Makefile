# Entry points. The two a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export CONTAINERS_CONF := $(CURDIR)/lab/containers.conf
LAB := $(VENV)/bin/python lab/lab.py
# Environment for the AWS playbooks: ENV=staging|production uses the normal AWS credential chain.
ENV ?= local

.PHONY: help setup demo test lab-up lab-status lab-down lint drift teardown

help:
	@echo "make demo      set up, start the local estate and converge it (run again: no change)"
	@echo "make test      every test: lint, syntax, unit, emulator, Molecule, end to end"
	@echo "make lab-status | lab-down    look at / remove the local estate"
	@echo "make drift ENV=staging        exit non-zero if AWS differs from the code"
	@echo "make teardown ENV=staging     remove an environment's AWS resources (production: ARGS='-e teardown_confirm_production=true')"

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

test: setup
	$(VENV)/bin/python -m pytest

lab-up: setup
	@$(LAB) up

lab-status:
	@$(LAB) status

lab-down:
	@$(LAB) down

lint: setup
	$(VENV)/bin/python -m pytest tests/test_lint.py

drift: setup
	@scripts/with_env.sh $(ENV) $(VENV)/bin/python scripts/drift_check.py $(ENV)

# Production needs ARGS='-e teardown_confirm_production=true'.
teardown: setup
	@scripts/with_env.sh $(ENV) $(VENV)/bin/ansible-playbook -i inventories/$(ENV) playbooks/teardown.yml $(ARGS)
