"""Installed in the lab's base image only (lab/image/build.sh), imported at the start of
every run of the image's system Python by chatmrpt-zip-bytecode.pth.

Ansible runs each task's module as an AnsiballZ zip, and Python's zipimport compiles every
source in a zip again on every import: on a lab instance that is about 60 ms of a task's
390 ms of CPU (30 tasks: 11.8 -> 9.5-10.3 CPU-s), on every task of every run of the suite.
This keeps the compiled code of a zip's sources in the user's
~/.cache/ansiballz-bytecode/<Python tag>/, named by the SHA-256 of the source, so the same
source is compiled once per user; the code is given the file name of the zip it is
imported from, so tracebacks stay right. An EC2 instance has no
such cache: the modules run the same, only slower (README, limits).
"""

# Only modules Python has loaded at start-up: hashlib and marshal wait for the first zip.
import os
import sys
import zipimport

_compile = getattr(zipimport, "_compile_source", None)  # zipimport's own compile step
_TAG = sys.implementation.cache_tag


def _named(code, filename):
    consts = tuple(_named(c, filename) if isinstance(c, type(code)) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _compile_source(pathname, source):
    import hashlib
    import marshal

    directory = os.path.join(os.path.expanduser("~"), ".cache", "ansiballz-bytecode", _TAG)
    path = os.path.join(directory, hashlib.sha256(source).hexdigest())
    try:
        with open(path, "rb") as handle:
            return _named(marshal.load(handle), pathname)
    except (OSError, EOFError, ValueError, TypeError, AttributeError):
        pass  # not cached yet (or unreadable): compiled as zipimport would
    code = _compile(pathname, source)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        partial = f"{path}.{os.getpid()}"
        with open(partial, "wb") as handle:
            marshal.dump(code, handle)
        os.replace(partial, path)
    except OSError:
        pass  # a home without room or rights: no cache, the import still works
    return code


if _compile is not None and _TAG:
    zipimport._compile_source = _compile_source
