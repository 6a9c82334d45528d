"""scripts/chatmrpt-fork-gc.pth, installed by scripts/setup.sh: in every interpreter of the
virtualenv, a forked child (Ansible's per-task worker) freezes what it inherited, so its
garbage collections never walk the controller's objects; the parent is left as it was."""

from __future__ import annotations

import subprocess

from helpers import VENV_BIN

PROBE = """
import gc, os
parent_before = gc.get_freeze_count()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, str(gc.get_freeze_count()).encode())
    os._exit(0)
os.waitpid(pid, 0)
print(parent_before, int(os.read(read, 64)), gc.get_freeze_count())
"""


def test_a_forked_child_freezes_what_it_inherited_and_the_parent_does_not():
    out = subprocess.run([str(VENV_BIN / "python"), "-c", PROBE], capture_output=True, text=True, check=True)
    parent_before, child, parent_after = map(int, out.stdout.split())
    assert child > 1000, f"the child froze {child} objects: the .pth did not run"
    assert parent_before == parent_after == 0, "the parent's objects must stay collectable"


def test_without_the_file_nothing_is_frozen():
    """The control: the same probe with site-packages' .pth files skipped (-S) freezes nothing."""
    out = subprocess.run([str(VENV_BIN / "python"), "-S", "-c", PROBE], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == "0"
