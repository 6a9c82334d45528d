"""What is installed is what is pinned: the virtualenv holds exactly requirements/test.txt,
runtime.txt is its subset without the test tools, and Ansible finds exactly the collections
of requirements.yml at their versions."""

from __future__ import annotations

import json
import re
import subprocess

import check_collections   # scripts/ (pytest.ini's pythonpath)
import pytest

from helpers import ROOT, VENV_BIN

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?:\s*\\)?$")
# Must never be needed to run the playbooks (requirements/runtime.in).
TEST_TOOLS = {"moto", "molecule", "molecule-plugins", "pytest", "pytest-testinfra", "pytest-xdist",
              "pytest-timeout", "hypothesis", "ansible-lint", "yamllint", "detect-secrets", "ansible-builder",
              "ansible-navigator", "cfn-lint", "sympy", "jsonschema"}


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """{package: version} of a compiled lock; every pin must carry hashes."""
    found, lines = {}, text.splitlines()
    for i, line in enumerate(lines):
        match = PIN.match(line)
        if match:
            assert i + 1 < len(lines) and "--hash=sha256:" in lines[i + 1], f"{line}: no hash"
            found[normal(match.group(1))] = match.group(2)
    return found


def lock(name: str) -> dict[str, str]:
    return pins((ROOT / "requirements" / name).read_text())


def installed() -> dict[str, str]:
    out = subprocess.run([str(VENV_BIN / "python"), "-m", "pip", "list", "--format", "json"],
                         capture_output=True, text=True, check=True).stdout
    return {normal(p["name"]): p["version"] for p in json.loads(out)}


def differences(pinned: dict[str, str], have: dict[str, str]) -> list[str]:
    have = {k: v for k, v in have.items() if k != "pip"}   # the installer itself is not pinned
    return ([f"{n} {have[n]} installed, pinned {v}" for n, v in sorted(pinned.items()) if n in have and have[n] != v]
            + [f"{n} pinned {v}, not installed" for n, v in sorted(pinned.items()) if n not in have]
            + [f"{n} {v} installed, not pinned" for n, v in sorted(have.items()) if n not in pinned])


def test_the_virtualenv_holds_exactly_the_test_lock():
    assert differences(lock("test.txt"), installed()) == []


def test_a_drifted_package_is_found():
    pinned = lock("test.txt")
    have = {**installed(), "boto3": "0.0.1", "left-over": "1.0"}
    del have["moto"]
    assert differences(pinned, have) == [f"boto3 0.0.1 installed, pinned {pinned['boto3']}",
                                         f"moto pinned {pinned['moto']}, not installed",
                                         "left-over 1.0 installed, not pinned"]


def test_runtime_is_the_test_lock_without_the_test_tools():
    runtime, test = lock("runtime.txt"), lock("test.txt")
    assert {n: test.get(n) for n in runtime} == runtime, "runtime.txt and test.txt pin different versions"
    assert sorted(TEST_TOOLS & set(runtime)) == []
    assert {"ansible-core", "ansible-runner", "boto3", "botocore", "psycopg"} <= set(runtime)
    assert not [n for n in test if n == "ansible"], "the `ansible` bundle installs ~90 collections"


def test_the_collections_are_exactly_those_of_requirements_yml():
    pinned = check_collections.pinned()
    assert sorted(pinned) == ["amazon.aws", "ansible.posix", "community.aws", "community.general",
                              "community.postgresql", "containers.podman"]
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in pinned.values()), "pins are exact versions"
    assert check_collections.problems(pinned, check_collections.installed()) == []


@pytest.mark.parametrize("change, said", [
    ({"amazon.aws": "10.1.1"}, "amazon.aws: 10.1.2 installed, requirements.yml pins 10.1.1"),
    ({"community.crypto": "3.0.0"}, "community.crypto: not installed (requirements.yml pins 3.0.0)"),
])
def test_a_collection_that_differs_from_its_pin_is_found(change, said):
    assert said in check_collections.problems({**check_collections.pinned(), **change},
                                              check_collections.installed())


def test_a_collection_installed_beside_the_pins_is_found():
    have = {**check_collections.installed(), "community.crypto": ["3.0.0"]}
    assert check_collections.problems(check_collections.pinned(), have) == [
        "community.crypto 3.0.0: installed, not in requirements.yml"]
