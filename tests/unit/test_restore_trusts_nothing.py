"""chatmrpt-restore runs as root on what it downloads: a manifest or an uploads archive
planted in the backups bucket must not make it write outside the instance directory, nor
create setuid files. The backup role's package (roles/backup/files/chatmrpt_backup/) is
imported as it is installed.

The oracle for paths is the file system's own resolution, not the script's rule: whatever
`check_manifest` accepts, joined to a directory and resolved, stays inside that directory.
"""

from __future__ import annotations

import importlib.util
import io
import os
import stat
import sys
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import ROOT

PACKAGE = ROOT / "roles/backup/files/chatmrpt_backup"


def _import_restore():
    """The package's restore module, loaded from the role's files without leaving a
    __pycache__ beside them."""
    spec = importlib.util.spec_from_file_location("chatmrpt_backup", PACKAGE / "__init__.py",
                                                  submodule_search_locations=[str(PACKAGE)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["chatmrpt_backup"] = package
    writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(package)
        return importlib.import_module("chatmrpt_backup.restore")
    finally:
        sys.dont_write_bytecode = writes


restore = _import_restore()

GOOD_FILE = {"path": "files/interactions.db", "kind": "sqlite", "source": "interactions.db", "mode": 0o640,
             "size": 1, "sha256": "0" * 64}


def manifest_with(**entry) -> dict:
    return {"files": [{**GOOD_FILE, **entry}]}


@pytest.mark.parametrize("source", ["/etc", "/etc/shadow", "../etc", "uploads/../../etc", "", ".", "a\x00b",
                                    None, 7])
@pytest.mark.parametrize("kind", ["archive", "sqlite"])
def test_a_source_outside_the_instance_directory_is_refused(kind, source):
    with pytest.raises(restore.BackupError, match="unsafe"):
        restore.check_manifest(manifest_with(kind=kind, source=source))


@pytest.mark.parametrize("path", ["/tmp/x", "../../root/.ssh/authorized_keys", "", None])
def test_a_file_path_outside_the_backup_is_refused(path):
    with pytest.raises(restore.BackupError, match="unsafe path"):
        restore.check_manifest(manifest_with(path=path))


def test_a_manifest_without_a_file_list_or_with_a_mode_that_is_not_a_number_is_refused():
    for manifest in ({}, {"files": "x"}, {"files": ["x"]}, manifest_with(mode="4755")):
        with pytest.raises(restore.BackupError):
            restore.check_manifest(manifest)


def test_a_normal_manifest_passes():
    restore.check_manifest({"files": [GOOD_FILE, {**GOOD_FILE, "kind": "archive", "path": "files/uploads.tar.gz",
                                                 "source": "uploads", "mode": 0o2775},
                                     {**GOOD_FILE, "kind": "config", "source": "/etc/chatmrpt/environment"}]})
    assert restore.permission_bits(0o4755) == 0o755 and restore.permission_bits(0o2775) == 0o775


PATHISH = st.lists(st.sampled_from(["a", "b", ".", "/", "..", "\x00", " ", "~", "é", "uploads"]), max_size=12).map("".join)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(source=PATHISH)
def test_every_accepted_source_resolves_inside_the_directory(tmp_path_factory, source):
    base = tmp_path_factory.getbasetemp() / "instance"
    try:
        restore.check_manifest(manifest_with(kind="archive", source=source))
    except restore.BackupError:
        return
    resolved = os.path.realpath(os.path.join(base, source))
    assert os.path.commonpath([resolved, str(base)]) == str(base) and resolved != str(base), source


def _archive(tmp_path, *members: tuple[tarfile.TarInfo, bytes]):
    path = tmp_path / "uploads.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _file(name: str, mode: int = 0o644, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


@pytest.mark.parametrize("member", ["/etc/cron.d/evil", "../evil", "uploads/../../evil", "other/evil"])
def test_an_archive_member_outside_its_directory_is_refused(tmp_path, member):
    archive = _archive(tmp_path, _file(member))
    with pytest.raises(restore.BackupError, match="unsafe member"):
        restore.extract_archive(archive, tmp_path / "tree", "uploads")
    assert not (tmp_path / "tree").exists()


def test_links_and_devices_in_an_archive_are_refused(tmp_path):
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE):
        info = tarfile.TarInfo("uploads/x")
        info.type, info.linkname = kind, "/etc/shadow"
        with pytest.raises(restore.BackupError, match="not a regular file"):
            restore.extract_archive(_archive(tmp_path, (info, b"")), tmp_path / "tree", "uploads")


def test_setuid_setgid_and_sticky_bits_are_not_restored(tmp_path):
    archive = _archive(tmp_path, _file("uploads/run.sh", 0o4755), _file("uploads/data.csv", 0o2664))
    restore.extract_archive(archive, tmp_path / "tree", "uploads")
    assert stat.S_IMODE((tmp_path / "tree/uploads/run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "tree/uploads/data.csv").stat().st_mode) == 0o664
