"""Installed into .venv's site-packages by scripts/setup.sh and imported at the start of
every interpreter of the virtualenv (scripts/chatmrpt-ansiballz-cache.pth).

Before a module runs, Ansible builds its AnsiballZ zip: the module and every module_util it
imports, found by parsing the source of each. It keeps the zips in a cache under the run's own
temporary directory, deleted when ansible-playbook exits, so every run builds every module it
uses again: building was a third of the controller's CPU on an emulator apply and re-apply
of infrastructure.yml (57 -> 39 CPU-s with this hook; the whole machine 98 -> 77). For a module installed in this virtualenv, this hook keeps that cache
in one directory per state of the virtualenv (.venv/.cache/ansiballz/<key>), so the next run
reads the zip instead of building it. The key changes with the ansible-core version, the
Python version, the collection paths Ansible searches and the modification times of their
collection namespaces, and site-packages' own modification time (pip changes it with every
package it installs or removes). A module from anywhere else (a role's library/, a collection outside the
virtualenv) is built per run, as Ansible does. Ansible's own code reads and writes the cache
(a lock per zip, each written to a temporary name and renamed); this only chooses the
directory. CHATMRPT_ANSIBALLZ_CACHE=0 turns it off; another value is the cache's root.
"""

from __future__ import annotations

# Only what Python has already loaded at start-up: this runs in every interpreter of the
# virtualenv, and the patch itself only when ansible-playbook imports module_common.
import os
import sys

_MODULE = "ansible.executor.module_common"


def cache_root() -> str | None:
    """The directory of the caches (one subdirectory per key), None when turned off."""
    setting = os.environ.get("CHATMRPT_ANSIBALLZ_CACHE", "")
    if setting == "0":
        return None
    return setting or os.path.join(sys.prefix, ".cache", "ansiballz")


def cache_key(constants, site_packages: str) -> str:
    """What the zips of the virtualenv's modules are made of, as a short digest."""
    import hashlib

    from ansible.release import __version__

    parts = [__version__, sys.version, f"{site_packages}:{_mtime(site_packages)}"]
    # A collection installed or replaced there changes its namespace directory (a module of
    # the virtualenv may import module_utils from it).
    for path in constants.COLLECTIONS_PATHS:
        root = os.path.join(path, "ansible_collections")
        parts.append(f"{path}:{_mtime(path)}:{_mtime(root)}")
        if os.path.isdir(root):
            parts += [f"{name}:{_mtime(os.path.join(root, name))}" for name in sorted(os.listdir(root))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _mtime(path: str) -> str:
    try:
        return str(os.stat(path).st_mtime_ns)
    except OSError:
        return "absent"


class _ConstantsWithCache:
    """module_common's view of ansible.constants while it builds a virtualenv module: the
    same values, but the temporary directory it keeps its `ansiballz_cache` in."""

    def __init__(self, constants, directory: str):
        self._constants = constants
        self.DEFAULT_LOCAL_TMP = directory

    def __getattr__(self, name):
        return getattr(self._constants, name)


def patch(module_common) -> None:
    """Builds the zips of modules installed in the virtualenv in the kept cache."""
    root = cache_root()
    if root is None or getattr(module_common, "_chatmrpt_ansiballz_cache", False):
        return
    constants = module_common.C
    # Where ansible-core is installed: .../site-packages/ansible/executor/module_common.py
    site_packages = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(module_common.__file__))))
    kept = _ConstantsWithCache(constants, os.path.join(root, cache_key(constants, site_packages)))
    try:
        os.makedirs(kept.DEFAULT_LOCAL_TMP, mode=0o700, exist_ok=True)
    except OSError:  # a virtualenv this user cannot write: Ansible's own per-run cache
        return
    build = module_common._find_module_utils

    def find_module_utils(**kwargs):
        module_path = os.path.abspath(kwargs.get("module_path") or "")
        if not module_path.startswith(site_packages + os.sep):
            return build(**kwargs)
        module_common.C = kept
        try:
            return build(**kwargs)
        finally:
            module_common.C = constants

    module_common._find_module_utils = find_module_utils
    module_common._chatmrpt_ansiballz_cache = True


class _PatchOnImport:
    """A meta path finder that lets the normal finders load module_common, then patches it."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


if not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _PatchOnImport())
