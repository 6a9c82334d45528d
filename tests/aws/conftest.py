"""The emulated accounts of tests/aws, built once (tests/aws_accounts.py).

The modules run in this order on one worker (tests/conftest.py: AWS_MODULE_ORDER, and the
scheduler keeps tests/aws one unit of work), all on the session's emulator:
  test_bad_inputs.py     refusals before any AWS call; no account needed
  test_compute.py        reads the accounts; tests that change them set them back by a run
  test_core.py           reads the accounts
  test_asg_move.py       moves production to its Auto Scaling group
  test_teardown_drift.py drift of staging, then every removal path: the accounts are gone
"""

from __future__ import annotations

import pytest

import aws_accounts


@pytest.fixture(scope="session")
def accounts(aws_env) -> aws_accounts.Accounts:
    built = aws_accounts.build(aws_env)
    yield built
    aws_accounts.reset_moto(aws_env)  # the other modules on this worker's emulator start empty
