"""docs/first-run-aws.md, run as an operator would: the commands of its steps marked
*(tested)* are read from the guide and run as written, in order, against an emulator of
this module's own (an empty account). Where the guide has the operator edit the inventory
(the certificate), the run gets the same setting with -e (tests/helpers.py OPERATOR_SETTINGS)."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from emulator import client, private_emulator
from helpers import ROOT, PlaybookRun, operator_settings

GUIDE = ROOT / "docs" / "first-run-aws.md"
KEY = "sk-guide-operator-key-0123456789"  # pragma: allowlist secret


def steps() -> dict[str, list[str]]:
    """{step heading: the commands of its ```sh blocks}, for the headings marked tested."""
    out: dict[str, list[str]] = {}
    heading = ""
    for block in re.split(r"^(## .*)$", GUIDE.read_text(), flags=re.M):
        if block.startswith("## "):
            heading = block[3:].strip()
        elif re.search(r"\*\((the [a-z]+ is )?tested\)\*$", heading):
            out[heading] = re.findall(r"^```sh\n(.*?)\n```", block, flags=re.M | re.S)
    return out


def step(name: str) -> list[str]:
    found = [commands for heading, commands in steps().items() if heading.startswith(name)]
    assert len(found) == 1 and found[0], f"the guide has no tested step '{name}': {list(steps())}"
    return found[0]


def run(command: str, env: dict, *extra: str, stdin: str | None = None) -> PlaybookRun:
    """The command as a shell runs it (leading VAR=value words set its environment)."""
    words = shlex.split(command)
    while "=" in words[0] and not words[0].startswith(("-", ".", "/")):
        name, _, value = words.pop(0).partition("=")
        env = {**env, name: value}
    proc = subprocess.run([*words, *extra], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=900)
    return PlaybookRun(proc.returncode, proc.stdout + proc.stderr)


@pytest.fixture(scope="module")
def account(tmp_path_factory):
    with private_emulator(tmp_path_factory.mktemp("moto") / "moto.log") as env:
        yield env


def test_the_guide_marks_the_steps_it_claims_are_tested():
    assert [h.split(".")[0] for h in steps()] == ["3", "4", "5", "6"]


def test_step_3_prices_staging(account):
    (command,) = step("3.")
    priced = run(command, account)
    assert priced.returncode == 0, priced.output[-3000:]
    assert "staging" in priced.output and "$" in priced.output


def test_step_4_stores_the_key_without_it_being_an_argument_or_shown(account):
    (command,) = step("4.")
    assert KEY not in command
    stored = run(command, account, stdin=KEY + "\n")
    assert stored.returncode == 0, stored.output
    assert KEY not in stored.output
    parameter = client(account, "ssm").get_parameter(Name="/chatmrpt/staging/app/OPENAI_API_KEY",
                                                     WithDecryption=True)["Parameter"]
    assert (parameter["Type"], parameter["Value"]) == ("SecureString", KEY)
    # a second run does not replace it unless asked to
    again = run(command, account, stdin="another\n")
    assert again.returncode == 1 and "--overwrite" in again.output
    assert client(account, "ssm").get_parameter(Name="/chatmrpt/staging/app/OPENAI_API_KEY",
                                                WithDecryption=True)["Parameter"]["Value"] == KEY


def test_step_5_refuses_staging_without_a_certificate_as_the_guide_shows(account):
    (command,) = step("5.")
    refused = run(command, account)
    assert refused.returncode != 0
    shown = re.search(r"^```text\n(.*?) \.\.\.\n```", GUIDE.read_text(), flags=re.M | re.S).group(1)
    failures = [" ".join(line.split()) for line in refused.failures()]
    assert len(failures) == 1 and shown in failures[0], failures


@pytest.mark.slow
def test_step_6_plans_staging_and_creates_nothing(account):
    plan, _apply = step("6.")
    ec2 = client(account, "ec2")
    groups_before = len(ec2.describe_security_groups()["SecurityGroups"])
    planned = run(plan, account, *operator_settings("staging"))
    assert planned.returncode == 0, planned.output[-3000:]
    assert planned.changed > 0   # it says what it would create
    assert len(ec2.describe_security_groups()["SecurityGroups"]) == groups_before
    assert client(account, "s3").list_buckets()["Buckets"] == []
    assert client(account, "elbv2").describe_load_balancers()["LoadBalancers"] == []
    assert client(account, "acm").list_certificates()["CertificateSummaryList"] == []
