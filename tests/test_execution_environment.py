"""The execution environment that AWX, the Automation Platform and ansible-navigator run the
playbooks in: scripts/build_ee.sh builds it from execution-environment.yml with
ansible-builder (skipped when the image's recipe label matches), on the lab's locally built
base image, without a registry. Inside it: the runtime pins and the pinned collections, no
test tool; `ansible-navigator run` passes validate.yml and applies a part of staging to an
emulator of its own, twice (the second run changes nothing)."""

from __future__ import annotations

import json
import re
import subprocess

import check_collections   # scripts/ (pytest.ini's pythonpath)
import pytest

from emulator import client, private_emulator
from helpers import CONTAINERS_CONF, ROOT, VENV_BIN, base_env, operator_settings
from test_pins import TEST_TOOLS, lock, normal

pytestmark = pytest.mark.slow

IMAGE = "localhost/chatmrpt-ee:latest"
RECAP = re.compile(r"^localhost\s+: ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0", re.M)


@pytest.fixture(scope="module")
def image():
    proc = subprocess.run([str(ROOT / "scripts" / "build_ee.sh")], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800, env=base_env(CONTAINERS_CONF=CONTAINERS_CONF))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return IMAGE


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """An AWS emulator of this module's own: the apply below must not meet other tests' staging."""
    with private_emulator(tmp_path_factory.mktemp("moto") / "moto.log") as env:
        yield {**env, "CONTAINERS_CONF": CONTAINERS_CONF}


def in_image(image, *command: str) -> str:
    proc = subprocess.run(["podman", "run", "--rm", "--entrypoint", command[0], image, *command[1:]],
                          capture_output=True, text=True, timeout=300, env=base_env(CONTAINERS_CONF=CONTAINERS_CONF))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def navigator(env, *args: str) -> tuple[int, str]:
    """`ansible-navigator run` with the project's ansible-navigator.yml; the emulator listens on
    the host's loopback, so the container shares the host's network."""
    proc = subprocess.run([str(VENV_BIN / "ansible-navigator"), "run", *args, "--container-options=--network=host"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    # ansible-runner marks each event with escape sequences; the text is what a user reads
    text = re.sub(r"\x1b\[K[A-Za-z0-9+/=]*\x1b\[\d+D\x1b\[K|\x1b\[[0-9;]*[A-Za-z]", "", proc.stdout + proc.stderr)
    return proc.returncode, text


def test_the_image_holds_the_runtime_pins_and_no_test_tool(image):
    have = {normal(p["name"]): p["version"] for p in json.loads(in_image(image, "python3", "-m", "pip", "list",
                                                                           "--format", "json"))}
    runtime = lock("runtime.txt")
    assert {name: have.get(name) for name in runtime} == runtime
    # A test tool pip installed; the base image's Debian packages (cloud-init pulls in
    # python3-jsonschema) are the AMI stand-in's, not the project's test lock.
    installed = json.loads(in_image(image, "python3", "-m", "pip", "inspect"))["installed"]
    by_pip = {normal(p["metadata"]["name"]) for p in installed if p.get("installer") == "pip"}
    assert sorted(TEST_TOOLS & by_pip) == []
    listed = json.loads(in_image(image, "ansible-galaxy", "collection", "list", "--format", "json"))
    assert check_collections.problems(check_collections.pinned(), check_collections.by_name(listed)) == []
    assert "psql (PostgreSQL)" in in_image(image, "psql", "--version")


def test_validate_passes_in_it(image, emulator):
    rc, text = navigator(emulator, "playbooks/validate.yml", "-i", "inventories/staging", *operator_settings("staging"))
    assert rc == 0 and RECAP.search(text), text[-4000:]
    # and refuses bad input there as on the controller
    rc, text = navigator(emulator, "playbooks/validate.yml", "-i", "inventories/staging", *operator_settings("staging"),
                         "-e", "aws_compute_asg_max_size=-1")
    assert rc != 0 and "aws_compute_asg_max_size" in text, text[-4000:]


def test_an_apply_to_the_emulator_runs_in_it_and_changes_nothing_the_second_time(image, emulator):
    first, text = navigator(emulator, "playbooks/infrastructure.yml", "-i", "inventories/staging", *operator_settings("staging"), "--tags", "storage")
    assert first == 0 and int(RECAP.search(text).group(1)) > 0, text[-4000:]
    s3 = client(emulator, "s3")
    assert "chatmrpt-staging-backups" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    again, text = navigator(emulator, "playbooks/infrastructure.yml", "-i", "inventories/staging", *operator_settings("staging"), "--tags", "storage",
                            "-vv")
    assert again == 0 and RECAP.search(text).group(1) == "0", text[-4000:]
    # it ran in the image (its ansible-playbook and Debian's Python), not in the virtualenv
    assert "executable location = /usr/local/bin/ansible-playbook" in text
    assert "(/usr/bin/python3)" in text and str(VENV_BIN) not in text
