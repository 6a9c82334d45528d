"""The files that scripts/setup.sh installs into .venv's site-packages (step 2b: each says why,
and each has its own behaviour tests beside this file) are the repository's current copies."""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import pytest

from helpers import ROOT, VENV_BIN

INSTALLED = Path(sysconfig.get_paths()["purelib"])
LOOP = re.search(r"^for file in ((?:[^;]|\\\n)+); do$", (ROOT / "scripts" / "setup.sh").read_text(), re.M)
FILES = LOOP.group(1).replace("\\\n", " ").split() if LOOP else []


def test_setup_installs_every_site_packages_file_of_the_repository():
    assert Path(sys.prefix).resolve() == (VENV_BIN / "..").resolve(), "the tests run outside .venv"
    shipped = {p.name for p in (ROOT / "scripts").iterdir() if p.name.startswith("chatmrpt") and
               (p.suffix == ".pth" or (ROOT / "scripts" / f"{p.stem.replace('_', '-')}.pth").exists())}
    assert FILES and set(FILES) == shipped, f"setup.sh installs {FILES}, the repository has {sorted(shipped)}"


@pytest.mark.parametrize("name", FILES)
def test_the_virtualenv_has_the_repositorys_copy(name):
    assert (INSTALLED / name).read_text() == (ROOT / "scripts" / name).read_text(), \
        f"scripts/setup.sh has not installed the current scripts/{name}"
