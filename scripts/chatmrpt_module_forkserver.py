"""Installed into .venv's site-packages by scripts/setup.sh and run at the start of every
interpreter of the virtualenv (scripts/chatmrpt-module-forkserver.pth).

Ansible runs each module on the controller as a new interpreter that reads the module from
its standard input (`python` with no arguments: pipelining, local connection). An amazon.aws
module then spends about 0.45 of its 0.6 CPU-s importing boto3 and botocore and reading
botocore's data before its first API call, and a playbook runs hundreds of them. Such an
interpreter hands its standard input, output and error, its environment, working directory
and umask to a server of this virtualenv that has done that once, and exits with the status
of the module; the server forks, and the fork runs the script read from that standard input
as a fresh interpreter would (`sys.argv == ['']`, `sys.path` as `python -` has it, threads
joined and atexit handlers run at the end). Measured on the emulator: an apply and a re-apply of staging
167 -> 97 CPU-s for the whole machine (102 with the imports alone), 156 -> 94 s.

What runs is the same code: the server imports only what a module would import from this
virtualenv anyway (never a module of the AnsiballZ zip) and reads the same data files
(_preload), and nothing of a module outlives its fork. Any interpreter started another way
(a script, -c, -m, a terminal on standard input) is not affected. Where the server cannot be had (no private directory, a server that does not
answer), the interpreter simply goes on and runs the script itself; so does one started with
CHATMRPT_MODULE_FORKSERVER=0. A server serves one user and one state of the virtualenv (its
socket's name hashes the installed packages' directory and the interpreter's startup
settings), accepts only its own user, and exits after ten idle minutes.
"""

from __future__ import annotations

import os
import sys

IDLE_SECONDS = 600
LEDGER = "CHATMRPT_MODULE_FORKSERVER_LEDGER"  # optional: a file that gets each module's CPU seconds
# The AWS services that the roles' and playbooks' modules call (botocore names).
SERVICES = ("acm", "autoscaling", "cloudfront", "cloudwatch", "ec2", "elbv2", "iam", "kms", "logs", "rds", "s3",
            "secretsmanager", "sns", "ssm", "sts")
_ACK, _STATUS = b"A", 4  # a fork started; then the 4-byte exit status (signed, as waitstatus_to_exitcode)


def handoff() -> None:
    """At interpreter startup (.pth): a script on standard input goes to the server."""
    if len(sys.orig_argv) != 1 or os.environ.get("CHATMRPT_MODULE_FORKSERVER") == "0":
        return
    try:
        if os.isatty(0):
            return
        cwd = os.getcwd()
    except OSError:
        return
    code = _run_in_server(cwd)
    if code is not None:
        os._exit(code)


def _key() -> str:
    """One server per virtualenv state and interpreter startup settings (this file is in the
    virtualenv's site-packages, whose time changes when a package is installed or removed)."""
    import hashlib

    purelib = os.path.dirname(__file__)
    settings = sorted((k, v) for k, v in os.environ.items() if k.startswith(("PYTHON", "LC_", "LANG")))
    state = [sys.executable, sys.prefix, os.stat(purelib).st_mtime_ns, os.stat(__file__).st_mtime_ns,
             settings, tuple(sys.flags)]
    return hashlib.sha256(repr(state).encode()).hexdigest()[:16]


def _private_dir() -> str | None:
    """/tmp/chatmrpt-forkserver-<uid>, 0700 and ours, or None."""
    import stat

    path = f"/tmp/chatmrpt-forkserver-{os.getuid()}"
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return path


def _run_in_server(cwd: str) -> int | None:
    """The module's exit code, or None when it did not start in a server."""
    import json
    import socket
    import struct
    import time

    directory = _private_dir()
    if directory is None:
        return None
    key = _key()
    address = f"{directory}/{key}.sock"
    for attempt in range(100):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect(address)
            break
        except OSError:
            conn.close()
            if attempt == 0:
                _start_server(address, key)
            time.sleep(0.05)
    else:
        return None
    umask = os.umask(0)
    os.umask(umask)
    request = json.dumps({"env": dict(os.environ), "cwd": cwd, "umask": umask}).encode()
    try:
        socket.send_fds(conn, [request], [0, 1, 2])
        if conn.recv(1) != _ACK:
            return None  # no fork was made: the script is still unread, run it here
    except OSError:
        return None
    status = conn.recv(_STATUS)
    if len(status) != _STATUS:
        return 255  # the server died while the module ran
    code = struct.unpack("i", status)[0]
    if code < 0:  # killed by a signal: die of the same one
        import signal

        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _start_server(address: str, key: str) -> None:
    """Only the first client of a server pays for importing subprocess."""
    import subprocess

    subprocess.Popen([sys.executable, "-c", f"import {__name__} as s; s.serve({address!r}, {key!r})"],
                     cwd="/", start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _preload() -> None:
    """What amazon.aws and community.aws modules import from the virtualenv, and botocore's
    data for the services the roles call: a module's session would parse the same files again
    (an EC2 client: about 0.15 CPU-s of JSON). botocore shares one loader and its cache between
    the clients of a session; here every default session of a fork shares one loader that read
    them already. A session with its own data path (AWS_DATA_PATH) gets its own loader."""
    import boto3.session  # noqa: F401
    import botocore.client  # noqa: F401
    import botocore.config  # noqa: F401
    import botocore.exceptions  # noqa: F401
    import botocore.loaders
    import botocore.paginate  # noqa: F401
    import botocore.session
    import botocore.waiter  # noqa: F401

    if os.environ.get("AWS_DATA_PATH"):
        return
    loader = botocore.loaders.create_loader()
    loader.list_available_services("service-2")
    for name in ("endpoints", "partitions", "sdk-default-configuration", "_retry"):
        loader.load_data_with_path(name)
    for service in SERVICES:
        for type_name in ("service-2", "endpoint-rule-set-1", "paginators-1", "waiters-2"):
            try:
                loader.load_service_model(service, type_name)
            except botocore.exceptions.DataNotFoundError:  # UnknownServiceError is one too
                pass
    fresh_loader = botocore.session.create_loader

    def create_loader(search_path_string=None):
        return loader if search_path_string is None else fresh_loader(search_path_string)

    botocore.session.create_loader = create_loader


def serve(address: str, key: str) -> None:
    """The server: one fork per connection, single-threaded (forking is safe), until idle."""
    import fcntl
    import select
    import signal
    import socket
    import struct
    import time

    lock = open(f"{address}.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another server of this key is starting or running
    search_path = sys.path[1:]  # what `python -` puts after its '' entry
    _preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    staging = f"{address}.{os.getpid()}"
    listener.bind(staging)
    listener.listen(64)
    os.replace(staging, address)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    running: dict[socket.socket, tuple[int, str | None]] = {}  # connection: (fork's pid, its CPU ledger)
    idle_since = time.monotonic()
    closing = False
    while True:
        ready, _, _ = select.select([listener, wake_read, *running], [], [], 0 if closing else 5)
        for source in ready:
            if source is listener:
                conn, _ = listener.accept()
                started = _start(conn, listener, running, (wake_read, wake_write), search_path)
                if started:
                    running[conn] = started
            elif source is wake_read:
                os.read(wake_read, 4096)
            elif not source.recv(16):  # the client went away (killed, timed out): so does its module
                try:
                    os.kill(running[source][0], signal.SIGKILL)
                except ProcessLookupError:
                    pass
        while running:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if not pid:
                break
            for conn, (child, ledger) in list(running.items()):
                if child == pid:
                    _record(ledger, usage)
                    try:
                        conn.send(struct.pack("i", os.waitstatus_to_exitcode(status)))
                    except OSError:
                        pass
                    conn.close()
                    del running[conn]
        if running or ready:
            idle_since = time.monotonic()
        elif closing:
            break
        elif time.monotonic() - idle_since > IDLE_SECONDS:
            # New clients start a new server from here on; the ones already queued are served.
            os.unlink(address)
            lock.close()
            closing = True
    listener.close()


def _start(conn, listener, running, wake_fds, search_path) -> tuple[int, str | None] | None:
    import json
    import socket

    try:
        if conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)[4:8] != os.getuid().to_bytes(4, sys.byteorder):
            conn.close()
            return None
        message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        request = json.loads(message)
    except (OSError, ValueError):
        conn.close()
        return None
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        conn.close()
        return None
    pid = os.fork()
    if pid == 0:
        listener.close()
        for other in running:
            other.close()
        for fd in wake_fds:
            os.close(fd)
        try:
            conn.send(_ACK)
            conn.close()
            _run_module(request, fds, search_path)
        finally:  # never return into the server's loop
            os._exit(255)
    for fd in fds:
        os.close(fd)
    return pid, request["env"].get(LEDGER)


def _record(ledger: str | None, usage) -> None:
    """The fork's CPU seconds, appended to the ledger its client named: its interpreter's
    parent cannot count a process that is not its child (tests/conftest.py reads it)."""
    if ledger:
        try:
            with open(ledger, "a", encoding="ascii") as handle:
                handle.write(f"{usage.ru_utime + usage.ru_stime:.3f}\n")
        except OSError:
            pass


def _run_module(request: dict, fds: list[int], search_path: list[str]) -> None:
    """In the fork: become the client's interpreter, read the script from its standard input and
    run it as `python -` would, then exit as that interpreter would."""
    import signal
    import types

    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for target, fd in enumerate(fds):  # sys.stdin/stdout/stderr are still the objects on fds 0-2
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [""]
    sys.path[:] = ["", *search_path]
    main = types.ModuleType("__main__")
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    code = 0
    try:
        exec(compile(sys.stdin.buffer.read(), "<stdin>", "exec"), main.__dict__)
    except SystemExit as stop:
        code = _exit_code(stop)
    except BaseException as error:  # noqa: BLE001 - as the interpreter does: print it, status 1
        import traceback

        traceback.print_exception(type(error), error, error.__traceback__.tb_next)  # from the script's frame on
        code = 1
    code = _finalize(code)
    os._exit(code & 0xFF)


def _exit_code(stop: SystemExit) -> int:
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code
    print(stop.code, file=sys.stderr)
    return 1


def _finalize(code: int) -> int:
    """Interpreter shutdown: join the threads, run the atexit handlers, flush the streams."""
    import atexit
    import threading

    try:
        threading._shutdown()  # noqa: SLF001 - what Py_FinalizeEx calls
        atexit._run_exitfuncs()  # noqa: SLF001
    except SystemExit as stop:
        code = _exit_code(stop)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120  # as the interpreter does when the flush fails
    return code
