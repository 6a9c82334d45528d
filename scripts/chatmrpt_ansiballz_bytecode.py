"""Installed into .venv's site-packages by scripts/setup.sh and imported at the start of
every interpreter of the virtualenv (scripts/chatmrpt-ansiballz-bytecode.pth).

Ansible runs a module as AnsiballZ: a zip of the module and the module_utils it needs, put
first on sys.path. Python's zipimport never caches bytecode, so every task compiles those
sources again: about 0.2 CPU-s of the 0.8 that an amazon.aws task costs on the controller.
When a module or package of the zip (under `ansible.` or `ansible_collections.`) is byte for
byte the file installed in this virtualenv, this finder loads the installed file instead,
whose compiled bytecode Python keeps in __pycache__. The code that runs is the same; a file
that differs (another version, a local module_utils) is still loaded from the zip, and a
package's submodules are still looked up in the zip, so each is compared too. Remote hosts
run their own Python and are not affected.
"""

from __future__ import annotations

# Only what Python has already loaded at start-up: this runs in every interpreter of the
# virtualenv, and importlib.abc, importlib.util and sysconfig would cost about 30 ms of CPU
# each time (importlib.abc alone pulls in importlib.resources, pathlib, zipfile and tempfile).
import os
import sys
import zipimport

_PREFIXES = ("ansible.", "ansible_collections.")
# The site-packages this file is installed into (sysconfig's purelib of the virtualenv).
_INSTALLED = os.path.dirname(os.path.abspath(__file__))


class InstalledCopyFinder:
    """Loads a module of an AnsiballZ zip from its identical installed copy (a meta path
    finder: Python only calls find_spec, so no importlib.abc base class)."""

    def find_spec(self, fullname, path, target=None):
        if not path or not fullname.startswith(_PREFIXES):
            return None
        entry = path[0]
        if ".zip" not in entry:  # not an AnsiballZ payload: the normal finders decide
            return None
        try:
            importer = zipimport.zipimporter(entry)
            source = importer.get_source(fullname)
            package = importer.is_package(fullname)
        except (ImportError, OSError):
            return None
        if source is None:
            return None
        relative = fullname.replace(".", "/") + ("/__init__.py" if package else ".py")
        installed = os.path.join(_INSTALLED, relative)
        try:
            with open(installed, encoding="utf-8") as handle:
                if handle.read() != source:
                    return None
        except (OSError, UnicodeDecodeError):
            return None
        import importlib.util  # only in a module process, once it imports from an AnsiballZ zip

        if package:
            child_path = f"{entry}/{fullname.rpartition('.')[2]}"
            return importlib.util.spec_from_file_location(fullname, installed, submodule_search_locations=[child_path])
        return importlib.util.spec_from_file_location(fullname, installed)


if not any(isinstance(finder, InstalledCopyFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, InstalledCopyFinder())
