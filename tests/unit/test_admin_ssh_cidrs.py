"""The aws_network role's guard on the admin SSH CIDRs (its Jinja arithmetic in vars/main.yml),
against Python's `ipaddress` as the independent oracle: a CIDR is accepted only if it is an
exact IPv4 network (no host bits, which AWS would drop: 10.0.0.0/0 is the internet) with a
prefix no shorter than aws_network_admin_ssh_min_prefix.

One Ansible process evaluates the role's variable for a few hundred CIDRs (seeded random
ones around the prefix and host-bit boundaries, plus the known spellings of the internet),
and every answer is compared with the oracle's.
"""

from __future__ import annotations

import ipaddress
import json
import random
import subprocess

from helpers import ROOT, VENV_BIN, base_env

KNOWN = ["0.0.0.0/0", "0.0.0.0/1", "128.0.0.0/1", "10.0.0.0/0", "10.0.0.0/8", "203.0.113.0/24",
         "203.0.113.7/24", "203.0.113.7/32", "198.51.0.0/16", "198.51.0.0/15", "255.255.255.255/32",
         "10.0.0.300/24", "not-a-cidr", "10.0.0.0/33", "010.0.0.0/16", " 10.0.0.0/16"]


def oracle_refuses(cidr: str, min_prefix: int) -> bool:
    try:
        network = ipaddress.IPv4Network(cidr, strict=True)
    except ValueError:
        return True
    # ipaddress accepts spellings AWS and the role's pattern do not: leading zeros, spaces
    return network.prefixlen < min_prefix or str(network) != cidr


def random_cidrs(count: int, seed: int = 20261202) -> list[str]:
    rng = random.Random(seed)
    cidrs = []
    for _ in range(count):
        prefix = rng.choice([0, 1, 7, 8, 15, 16, 17, 24, 31, 32, rng.randint(0, 32)])
        address = rng.getrandbits(32)
        if rng.random() < 0.5:   # exact network half the time, host bits the other half
            address &= (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
        cidrs.append(f"{ipaddress.IPv4Address(address)}/{prefix}")
    return cidrs


def refused_by_the_role(cidrs: list[str], min_prefix: int) -> list[str]:
    extra = {"aws_network_admin_ssh_cidrs": cidrs, "aws_network_admin_ssh_min_prefix": min_prefix}
    proc = subprocess.run(
        [str(VENV_BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-o",
         "-m", "ansible.builtin.debug", "-a", "var=__aws_network_admin_ssh_refused",
         "-e", "@roles/aws_network/vars/main.yml", "-e", json.dumps(extra)],
        cwd=ROOT, env=base_env(ANSIBLE_CALLBACK_RESULT_FORMAT="json"), capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.split("=>", 1)[1])["__aws_network_admin_ssh_refused"]


def test_the_role_refuses_exactly_what_ipaddress_refuses():
    cidrs = KNOWN + random_cidrs(400)
    for min_prefix in (16, 8):
        refused = refused_by_the_role(cidrs, min_prefix)
        expected = [c for c in cidrs if oracle_refuses(c, min_prefix)]
        assert refused == expected, (
            f"min prefix {min_prefix}: refused but valid {sorted(set(refused) - set(expected))}, "
            f"accepted but invalid {sorted(set(expected) - set(refused))}")
        assert {"0.0.0.0/0", "0.0.0.0/1", "10.0.0.0/0"} <= set(refused)
