"""lab/image/chatmrpt_zip_bytecode.py, in the lab's base image: the code compiled from a
zip's source is kept per user under ~/.cache/ansiballz-bytecode and used again for the same
source (the SHA-256 of its bytes), with the file name of the zip it is imported from."""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from helpers import ROOT

PROBE = """
import json, sys, traceback
import chatmrpt_zip_bytecode
sys.path.insert(0, sys.argv[1])
import probe_pkg.values as values
try:
    values.fail()
except RuntimeError:
    where = traceback.extract_tb(sys.exc_info()[2])[-1].filename
print(json.dumps({"value": values.VALUE, "file": values.__file__, "raised_in": where}))
"""
SOURCE = 'VALUE = "compiled from the zip"\n\n\ndef fail():\n    raise RuntimeError("boom")\n'


def payload(directory: Path, source: str = SOURCE) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / "ansible_probe_payload.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("probe_pkg/__init__.py", "")
        zipped.writestr("probe_pkg/values.py", source)
    return archive


def probe(archive: Path, home: Path) -> dict[str, str]:
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT / "lab" / "image")}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(archive)], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout)


def cached(home: Path) -> dict[str, Path]:
    return {p.name: p for p in (home / ".cache" / "ansiballz-bytecode").glob("*/*")}


def test_the_same_source_is_compiled_once_and_its_cached_code_is_what_runs(tmp_path):
    home = tmp_path / "home"
    first = probe(payload(tmp_path / "run1"), home)
    assert first["value"] == "compiled from the zip"
    entries = cached(home)
    assert len(entries) == 2, entries  # probe_pkg/__init__.py and probe_pkg/values.py
    # Swap the cached code of values.py for other code: a second run from a new zip with the
    # same source must run the cached code, so it was not compiled again.
    values = entries[hashlib.sha256(SOURCE.encode()).hexdigest()]
    values.write_bytes(marshal.dumps(compile(SOURCE.replace("compiled from the zip", "from the cache"), "x", "exec")))
    second = probe(payload(tmp_path / "run2"), home)
    assert second["value"] == "from the cache"
    assert cached(home).keys() == entries.keys()
    assert values.parent.stat().st_mode & 0o777 == 0o700  # the user's own


def test_cached_code_names_the_zip_it_is_imported_from(tmp_path):
    home = tmp_path / "home"
    probe(payload(tmp_path / "run1"), home)
    second = probe(payload(tmp_path / "run2"), home)
    assert second["raised_in"] == str(tmp_path / "run2" / "ansible_probe_payload.zip" / "probe_pkg" / "values.py")
    assert second["file"] == second["raised_in"]


def test_a_changed_source_is_compiled_and_cached_apart(tmp_path):
    home = tmp_path / "home"
    probe(payload(tmp_path / "run1"), home)
    changed = probe(payload(tmp_path / "run2", SOURCE.replace("compiled from the zip", "changed")), home)
    assert changed["value"] == "changed"
    assert len(cached(home)) == 3


def test_a_home_without_rights_still_imports(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o500)
    try:
        result = probe(payload(tmp_path / "run1"), home)
    finally:
        home.chmod(0o700)
    assert result["value"] == "compiled from the zip"
    if os.geteuid() != 0:  # root writes anyway
        assert cached(home) == {}
