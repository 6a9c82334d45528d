"""The backup role's program is a package of modules of a readable size, each marked as
managed (the role overwrites local changes), and the role installs every one of them."""

from __future__ import annotations

import ast

import pytest

from helpers import ROOT

PACKAGE = ROOT / "roles/backup/files/chatmrpt_backup"
MODULES = sorted(PACKAGE.glob("*.py"))
MAX_LINES = 400


def test_the_package_has_its_modules():
    assert {path.stem for path in MODULES} == {"__init__", "__main__", "config", "storage", "backup", "restore", "cli"}


@pytest.mark.parametrize("module", MODULES, ids=lambda path: path.name)
def test_each_module_is_of_a_readable_size_and_marked_managed(module):
    text = module.read_text(encoding="utf-8")
    assert len(text.splitlines()) < MAX_LINES, f"{module.name}: split it, it is over {MAX_LINES} lines"
    assert text.startswith("# Managed by Ansible (role `backup`)")
    ast.parse(text, filename=str(module), feature_version=(3, 9))


def test_the_role_installs_every_module_and_both_commands_from_one_launcher():
    tasks = (ROOT / "roles/backup/tasks/install-scripts.yml").read_text(encoding="utf-8")
    assert "query('ansible.builtin.fileglob', 'chatmrpt_backup/*.py')" in tasks
    assert "src: launcher.py.j2" in tasks
    launcher = (ROOT / "roles/backup/templates/launcher.py.j2").read_text(encoding="utf-8")
    assert "from chatmrpt_backup.cli import main" in launcher
