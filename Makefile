# Entry points. The two a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export CONTAINERS_CONF := $(CURDIR)/lab/containers.conf
LAB := $(VENV)/bin/python lab/lab.py
# Environment for the AWS playbooks: ENV=staging|production uses the normal AWS credential chain.
ENV ?= local

.PHONY: help setup demo test check test-times lab-up lab-status lab-down lint drift teardown

help:
	@echo "make demo      set up, start the local estate and converge it (run again: no change)"
	@echo "make test      every test: lint, syntax, unit, emulator, Molecule, end to end (own lab; the demo's stays)"
	@echo "make check     the fast tier: lint, syntax, unit and the quicker emulator tests, no instances"
	@echo "make test-times    time and CPU per test directory of the last run"
	@echo "make lab-status | lab-down    look at / remove the local estate"
	@echo "make drift ENV=staging        exit non-zero if AWS differs from the code"
	@echo "make teardown ENV=staging     remove an environment's AWS resources (production: ARGS='-e teardown_confirm_production=true -e aws_database_absent_override_deletion_protection=true')"

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

# Every test, on a lab of its own (tests/conftest.py): the estate of `make demo` stays up.
# Two workers: the local estate's tests in one, everything else in the other.
test: setup
	$(VENV)/bin/python -m pytest -n 2

# The fast tier: no podman instance (tests/conftest.py marks those `estate`), nothing `slow`.
check: setup
	$(VENV)/bin/python -m pytest -m "not estate and not slow"

test-times:
	@$(VENV)/bin/python scripts/test_times.py

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

# Production needs ARGS='-e teardown_confirm_production=true -e aws_database_absent_override_deletion_protection=true'
# (its database has deletion protection).
teardown: setup
	@scripts/with_env.sh $(ENV) $(VENV)/bin/ansible-playbook -i inventories/$(ENV) playbooks/teardown.yml $(ARGS)
