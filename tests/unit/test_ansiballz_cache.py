"""scripts/chatmrpt_ansiballz_cache.py, installed by scripts/setup.sh: the AnsiballZ zip of a
module installed in the virtualenv is built by the first ansible-playbook run and read by the
next; a module from anywhere else is built in every run, as Ansible does; the cache's key
follows the virtualenv.

Ansible's debug output says, for each task, whether it built the zip ("ANSIBALLZ: Creating
module") or read it, and from which file ("ANSIBALLZ: using cached module: <path>")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import chatmrpt_ansiballz_cache as hook
from helpers import ROOT, VENV_BIN, base_env

PROBE_MODULE = """#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule

AnsibleModule(argument_spec={}).exit_json(changed=False, probe="answered")
"""
PLAY = """- hosts: localhost
  gather_facts: false
  tasks:
    - {name: ping one, ansible.builtin.ping: {}}
    - {name: ping two, ansible.builtin.ping: {}}
    - {name: probe one, chatmrpt_probe: {}}
    - {name: probe two, chatmrpt_probe: {}}
"""
BUILT = "ANSIBALLZ: Creating module"
READ = "ANSIBALLZ: using cached module: "


def run_twice(tmp_path: Path, setting: str) -> list[str]:
    (tmp_path / "library").mkdir(exist_ok=True)
    (tmp_path / "library" / "chatmrpt_probe.py").write_text(PROBE_MODULE)
    (tmp_path / "play.yml").write_text(PLAY)
    env = base_env(CHATMRPT_ANSIBALLZ_CACHE=setting, ANSIBLE_DEBUG="1")
    outputs = []
    for _ in range(2):
        proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                               "-e", f"ansible_python_interpreter={VENV_BIN / 'python'}", str(tmp_path / "play.yml")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert proc.stdout.count('"ping": "pong"') == 2 and proc.stdout.count('"probe": "answered"') == 2
        outputs.append(proc.stdout)
    return outputs


def reads(output: str) -> list[str]:
    return [line.split(READ, 1)[1].split()[0] for line in output.splitlines() if READ in line]


def test_a_virtualenv_module_is_built_by_the_first_run_only(tmp_path):
    cache = tmp_path / "cache"
    first, second = run_twice(tmp_path, str(cache))
    kept = [path for path in reads(first) + reads(second) if path.startswith(str(cache))]
    # ping: built once in the first run, read by its second task and both of the next run's.
    assert len(kept) == 3 and {Path(path).name for path in kept} == {"ansible.modules.ping-ZIP_DEFLATED-none"}, kept
    assert Path(kept[0]).is_file()
    # The probe, from the playbook's library/: built in each run, in the run's own directory.
    assert first.count(BUILT) == 2 and second.count(BUILT) == 1
    per_run = [path for path in reads(second) if not path.startswith(str(cache))]
    assert len(per_run) == 1 and "chatmrpt_probe" in per_run[0] and "/ansible-local-" in per_run[0], per_run


def test_turned_off_every_run_builds_every_module(tmp_path):
    first, second = run_twice(tmp_path, "0")
    assert first.count(BUILT) == second.count(BUILT) == 2
    assert all("/ansible-local-" in path for path in reads(first) + reads(second))


def test_the_key_follows_ansible_python_site_packages_and_the_collection_paths(tmp_path):
    site, collections = tmp_path / "site-packages", tmp_path / "collections"
    site.mkdir()
    constants = SimpleNamespace(COLLECTIONS_PATHS=[str(collections)])
    keys = [hook.cache_key(constants, str(site))]
    collections.mkdir()  # a collection path that appears
    keys.append(hook.cache_key(constants, str(site)))
    (collections / "ansible_collections" / "amazon").mkdir(parents=True)
    os.utime(collections / "ansible_collections", ns=(1, 1))
    os.utime(collections, ns=(1, 1))
    keys.append(hook.cache_key(constants, str(site)))
    (collections / "ansible_collections" / "amazon" / "aws").mkdir()  # a collection installed there
    os.utime(collections / "ansible_collections" / "amazon", ns=(2, 2))
    keys.append(hook.cache_key(constants, str(site)))
    os.utime(site, ns=(1, 1))  # pip installed or removed a package
    keys.append(hook.cache_key(constants, str(site)))
    assert keys[-1] == hook.cache_key(constants, str(site)), "the key is not stable"
    assert len(set(keys)) == 5, keys


def test_the_cache_lives_in_the_virtualenv_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("CHATMRPT_ANSIBALLZ_CACHE", raising=False)
    assert hook.cache_root() == os.path.join(sys.prefix, ".cache", "ansiballz")
    monkeypatch.setenv("CHATMRPT_ANSIBALLZ_CACHE", "0")
    assert hook.cache_root() is None
