"""Build the compiled modules next to this file: the loader's reader (``_copyrows.c``)
and the verification's source checksum (``_rowhash.c``).

    python -m chatmrpt_migrate.build           (with PYTHONPATH=tools, in the tool's venv)
    python -m chatmrpt_migrate.build --check   exit 0 when they load and are up to date

Needs a C compiler, Python's headers and SQLite's (Debian: gcc python3-dev libsqlite3-dev;
Amazon Linux 2023: gcc python3.11-devel sqlite-devel).  Without them the tool does the
same work in Python (the same bytes and checksums, with about 2.5x the client CPU).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import sysconfig
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = ("_copyrows", "_rowhash")


def compiled_modules() -> dict[str, bool]:
    """Which compiled modules load (the report's ``compiled``): the loader's reader and the
    verification's checksum (without importing the loader: a plan runs without psycopg)."""
    found = {}
    for name, module in (("reader", "_copyrows"), ("checksum", "_rowhash")):
        try:
            importlib.import_module(f"{__package__}.{module}")
            found[name] = True
        except ImportError:
            found[name] = False
    return found


def target(module: str) -> str:
    return os.path.join(HERE, module + sysconfig.get_config_var("EXT_SUFFIX"))


def build(module: str) -> str:
    out = target(module)
    fd, tmp = tempfile.mkstemp(dir=HERE, prefix=f".{module}-", suffix=".so")
    os.close(fd)
    cmd = [os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-Wall",
           f"-I{sysconfig.get_paths()['include']}",
           os.path.join(HERE, module + ".c"), "-lsqlite3", "-o", tmp]
    try:
        subprocess.run(cmd, check=True)
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)     # atomic: a running loader keeps the file it mapped
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def up_to_date() -> bool:
    """Every module loads and is newer than its source and this file."""
    if not all(compiled_modules().values()):
        return False
    newest = max(os.path.getmtime(os.path.join(HERE, m + ".c")) for m in MODULES)
    newest = max(newest, os.path.getmtime(__file__))
    return all(os.path.getmtime(target(m)) >= newest for m in MODULES)


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:      # exit 0 when nothing needs building
        sys.exit(0 if up_to_date() else 1)
    try:
        for m in MODULES:
            print(build(m))
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"chatmrpt_migrate.build: {e}")
