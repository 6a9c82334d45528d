"""Bad input to the recovery drill (roles/recovery, entry point `drill_validate`) is refused
on the controller with a message naming the variable, before any AWS call and before any
host is touched: the runs point at an endpoint where nothing listens (an AWS call would fail
with a connection error instead of the message; the dynamic inventory only warns), as
tests/aws/test_bad_inputs.py does for the roles of validate.yml. The refusals of restore.yml
need app hosts: tests/ops/test_backup_restore.py runs them on the local estate."""

from __future__ import annotations

import pytest

from emulator import REGION
from helpers import base_env, run_playbooks

# (inventory, extra arguments, the failed task, what its message must say)
CASES = [
    ("local", ["-e", "recovery_drill_backup=yesterday"], "recovery : Check the drill settings",
     "RECOVERY REFUSED: recovery_drill_victim must be an app instance's Name tag (e.g. ChatMRPT-Local-App-1) or "
     "instance id (got 'ChatMRPT-Local-App-1'); recovery_drill_backup `fresh`, `latest` or a backup timestamp "
     "such as 20261126T120000Z (got 'yesterday')"),
    ("local", ["-e", "recovery_drill_claimed_seconds=soon"], "recovery : Validating arguments against arg spec "
     "'drill_validate'", "recovery_drill_claimed_seconds"),
    ("production", [], "recovery : Refuse a production drill without confirmation",
     "RECOVERY REFUSED: the drill terminates a production instance (ChatMRPT-Production-App-1); its users are "
     "served by the other instances meanwhile. Pass -e recovery_drill_confirm_production=true to confirm."),
]
IDS = ["malformed-backup", "claimed-seconds-not-an-int", "production-unconfirmed"]


@pytest.fixture(scope="module")
def refusals():
    dead = base_env(AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_ACCESS_KEY_ID="testing",
                    AWS_SECRET_ACCESS_KEY="testing",  # pragma: allowlist secret
                    AWS_DEFAULT_REGION=REGION, AWS_REGION=REGION, ANSIBLE_INVENTORY_UNPARSED_FAILED="false")
    return run_playbooks([("recovery_drill.yml", inventory, *args) for inventory, args, _, _ in CASES], env=dead)


@pytest.mark.parametrize("index", range(len(CASES)), ids=IDS)
def test_bad_drill_input_is_refused_before_anything_changes(refusals, index):
    _, _, task, message = CASES[index]
    run = refusals[index]
    assert run.returncode != 0
    failures = [" ".join(line.split()) for line in run.failures()]
    assert len(failures) == 1, run.output[-3000:]
    assert f"TASK [{task}" in run.output, run.output[-3000:]
    assert message in failures[0], failures[0]
    assert "Could not connect" not in failures[0]
    # Only the controller took part, and nothing changed.
    assert set(run.recap) == {"localhost"}, run.recap
    assert run.changed == 0, run.changed_tasks()
