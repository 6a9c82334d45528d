"""scripts/chatmrpt_ansiballz_bytecode.py, installed by scripts/setup.sh: a module of an
AnsiballZ zip that is byte for byte the installed file is loaded from the installed file (its
cached bytecode); one that differs is loaded from the zip, and so are its submodules' lookups.

The zips here are built like AnsiballZ's: Ansible's module_utils tree as installed, under a
bare `ansible` package, first on sys.path."""

from __future__ import annotations

import json
import subprocess
import sysconfig
import zipfile
from pathlib import Path

from helpers import VENV_BIN

INSTALLED = Path(sysconfig.get_paths()["purelib"])
PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import ansible.module_utils.basic, ansible.module_utils.common.text.converters as converters
print(json.dumps({"basic": ansible.module_utils.basic.__file__, "converters": converters.__file__,
                  "common": ansible.module_utils.common.__path__[0]}))
"""


def payload(tmp_path: Path, changed: str | None = None) -> Path:
    """A zip of ansible/module_utils as installed; `changed` (a path under module_utils) gets a comment line more."""
    archive = tmp_path / "ansible_probe_payload.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("ansible/__init__.py", "")
        for source in (INSTALLED / "ansible" / "module_utils").rglob("*.py"):
            name = source.relative_to(INSTALLED).as_posix()
            text = source.read_text()
            zipped.writestr(name, text + "# changed\n" if name == f"ansible/module_utils/{changed}" else text)
    return archive


def probe(archive: Path) -> dict[str, str]:
    out = subprocess.run([str(VENV_BIN / "python"), "-c", PROBE, str(archive)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_identical_modules_come_from_the_installed_files(tmp_path):
    loaded = probe(payload(tmp_path))
    assert loaded["basic"] == str(INSTALLED / "ansible/module_utils/basic.py")
    assert loaded["converters"] == str(INSTALLED / "ansible/module_utils/common/text/converters.py")
    # A package loaded from its installed file still looks its submodules up in the zip.
    assert loaded["common"].startswith(str(tmp_path / "ansible_probe_payload.zip"))


def test_a_module_that_differs_comes_from_the_zip(tmp_path):
    loaded = probe(payload(tmp_path, changed="common/text/converters.py"))
    assert loaded["converters"] == str(tmp_path / "ansible_probe_payload.zip/ansible/module_utils/common/text/converters.py")
    assert loaded["basic"] == str(INSTALLED / "ansible/module_utils/basic.py")


def test_without_the_file_everything_comes_from_the_zip(tmp_path):
    """The control: site-packages' .pth files skipped (-S; the venv's packages then come from
    PYTHONPATH) and every module is the zip's."""
    archive = payload(tmp_path)
    out = subprocess.run([str(VENV_BIN / "python"), "-S", "-c", PROBE, str(archive)], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(INSTALLED)})
    loaded = json.loads(out.stdout)
    assert loaded["basic"] == str(archive / "ansible/module_utils/basic.py")


def test_at_start_up_it_imports_nothing_python_had_not_loaded():
    """Every interpreter of the virtualenv imports the file (its .pth), so it must not import
    importlib.util, importlib.abc (which pulls in pathlib, zipfile, tempfile) or sysconfig at
    start-up: with them, an interpreter started in 46 ms of CPU, without them in 18."""
    out = subprocess.run([str(VENV_BIN / "python"), "-c", "import sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "chatmrpt_ansiballz_bytecode" in loaded  # the control: the hook did load
    assert loaded.isdisjoint({"importlib.util", "importlib.abc", "sysconfig", "pathlib", "zipfile", "tempfile"}), \
        sorted(loaded)
