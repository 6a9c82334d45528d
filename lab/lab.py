#!/usr/bin/env python3
"""The local estate: the AWS emulator, a PostgreSQL server, Redis and a podman network.

    lab.py up       start what is missing (idempotent)
    lab.py status   say what runs, exit 1 if something is down
    lab.py down     remove everything the lab created, and nothing else
    lab.py env      print the shell exports that point AWS clients at the emulator

HAProxy on 127.0.0.1:8080 stands in for the ALB and follows the target group. The
emulator, PostgreSQL and Redis listen on the loopback and on the lab bridge's gateway (the
instances' host.containers.internal) only, never on every interface.
The playbooks never learn that this is not AWS: they only see AWS_ENDPOINT_URL and
dummy credentials, exported by `lab.py env`. The EC2 instances are podman containers
that the lab controller (lab/controller.py, in the emulator's process) keeps in step with
the emulator, as AWS does: one per running instance, booted by cloud-init with its user
data, removed when the instance goes; CreateImage commits the instance's container as the
AMI's local image. They are labelled so that `down` finds them. Ansible reaches them over
SSH, as the user `admin` of the base image with the lab's own key (`.lab/ssh/id_ed25519`),
as it would reach EC2 instances with their key pair.
"""

from __future__ import annotations

import functools
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("LAB_STATE_DIR", ROOT / ".lab"))
MOTO_PORT = int(os.environ.get("LAB_MOTO_PORT", "4566"))
PG_PORT = int(os.environ.get("LAB_PG_PORT", "55432"))
REDIS_PORT = int(os.environ.get("LAB_REDIS_PORT", "56379"))
NETWORK = os.environ.get("LAB_NETWORK", "chatmrpt-lab")
# The local environment's VPC has this CIDR too, so each container gets the private IP
# that the emulator gave its instance.
SUBNET = os.environ.get("LAB_SUBNET", "10.213.0.0/16")
REGION = os.environ.get("LAB_REGION", "us-east-2")
LABEL = "io.chatmrpt.lab"  # every container of the lab carries it, with the lab name as value
LB_PORT = int(os.environ.get("LAB_LB_PORT", "8080"))
PG_BIN = Path(os.environ.get("LAB_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_SUPERUSER = "chatmrpt_master"  # stands in for the RDS master user
VENV_BIN = Path(sys.executable).parent
CONTAINERS_CONF = str(ROOT / "lab" / "containers.conf")
LAB_BASE_REPOSITORY = "localhost/chatmrpt-lab-base"  # tag = the lab's name: this lab's base image


def log(message: str) -> None:
    print(f"lab: {message}", flush=True)


def run(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONTAINERS_CONF": CONTAINERS_CONF}
    return subprocess.run(args, check=check, text=True, capture_output=True, env=env, **kwargs)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SystemExit(f"lab: {what} did not come up within {timeout:.0f}s (logs in {STATE})")


def pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


# --- the AWS emulator ------------------------------------------------------------------

def moto_up(base_image: str) -> None:
    pidfile = STATE / "moto.pid"
    if pid_alive(pidfile) and port_open(MOTO_PORT):
        return
    if port_open(MOTO_PORT):
        raise SystemExit(f"lab: port {MOTO_PORT} is taken by another program; set LAB_MOTO_PORT")
    # Managed policies (CloudWatchAgentServerPolicy...) exist as in AWS; path-style S3 only, or
    # moto reads `host.containers.internal` as a bucket name.
    env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true", "S3_IGNORE_SUBDOMAIN_BUCKETNAME": "true",
           "CONTAINERS_CONF": CONTAINERS_CONF}
    settings = STATE / "controller.json"
    settings.write_text(json.dumps({
        "state_dir": str(STATE), "network": NETWORK, "label": LABEL, "base_image": base_image, "lb_port": LB_PORT,
        "ssh_public_key": str(STATE / "ssh" / "id_ed25519.pub"), "log_file": str(STATE / "controller.log"),
    }, indent=2) + "\n")
    with open(STATE / "moto.log", "ab") as logfile:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "lab" / "emulator_server.py"), "--controller", str(settings),
             str(MOTO_PORT), *listen_addresses()],
            stdout=logfile, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    pidfile.write_text(str(proc.pid))
    wait_for(lambda: port_open(MOTO_PORT), "the AWS emulator")
    log(f"AWS emulator listening on port {MOTO_PORT}, the lab controller following it (log: {STATE / 'controller.log'})")


# --- PostgreSQL, the stand-in for RDS -----------------------------------------------------

def pg_data() -> Path:
    return STATE / "pg" / "data"


def as_postgres(*args: str) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        args = ("runuser", "-u", "postgres", "--", *args)
    return run(*args)


def pg_up() -> None:
    data = pg_data()
    password_file = STATE / "pg" / "master-password"
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        password_file.write_text(secrets.token_urlsafe(24))
        password_file.chmod(0o600)
        if os.geteuid() == 0:
            postgres = pwd.getpwnam("postgres")
            for path in (STATE / "pg", data):
                os.chown(path, postgres.pw_uid, postgres.pw_gid)
            os.chown(password_file, postgres.pw_uid, postgres.pw_gid)
        as_postgres(
            str(PG_BIN / "initdb"), "-D", str(data), "-U", PG_SUPERUSER, "--auth=scram-sha-256",
            f"--pwfile={password_file}", "--encoding=UTF8", "--locale=C.UTF-8",
        )
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"port = {PG_PORT}\nunix_socket_directories = '{data}'\n")
        with open(data / "pg_hba.conf", "w") as hba:
            hba.write(
                "# local estate: password logins from this host and the lab network only\n"
                "local all all scram-sha-256\n"
                "host all all 127.0.0.1/32 scram-sha-256\n"
                f"host all all {SUBNET} scram-sha-256\n"
            )
    if port_open(PG_PORT):
        return
    as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(STATE / "pg" / "server.log"), "-w",
                "-o", f"-c listen_addresses='{','.join(listen_addresses())}'", "start")
    log(f"PostgreSQL listening on port {PG_PORT}")


def pg_down() -> None:
    if (pg_data() / "postmaster.pid").exists():
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(pg_data()), "-m", "fast", "-w", "stop")


def store_secret_once(name: str, source: Path) -> None:
    """Record a stand-in's secret (the file `source`) where the estate expects AWS's: in the
    emulator's SSM, once (aws_secrets keeps an existing value)."""
    import boto3  # the venv has it; imported late so `lab.py down` works without it

    ssm = boto3.client("ssm", region_name=REGION, endpoint_url=f"http://127.0.0.1:{MOTO_PORT}",
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # pragma: allowlist secret
    try:
        ssm.get_parameter(Name=name)
    except ssm.exceptions.ParameterNotFound:
        ssm.put_parameter(Name=name, Value=source.read_text().strip(), Type="SecureString",
                          Tags=[{"Key": "Project", "Value": "chatmrpt"}, {"Key": "Environment", "Value": "local"}])


# --- Redis, the stand-in for ElastiCache ----------------------------------------------------

def redis_up() -> None:
    """redis-server with a password (the ElastiCache AUTH token's stand-in), from a 0600
    configuration file (the password never on a command line)."""
    data = STATE / "redis"
    data.mkdir(parents=True, exist_ok=True)
    password_file = data / "auth-token"
    if not password_file.exists():
        password_file.write_text(secrets.token_hex(32))
        password_file.chmod(0o600)
    config = data / "redis.conf"
    config.write_text(
        f"port {REDIS_PORT}\nbind {' '.join(listen_addresses())}\nrequirepass {password_file.read_text().strip()}\n"
        f"daemonize yes\npidfile {data / 'redis.pid'}\nlogfile {data / 'redis.log'}\ndir {data}\n"
        "save \"\"\nappendonly no\n")
    config.chmod(0o600)
    if pid_alive(data / "redis.pid") and port_open(REDIS_PORT):
        return
    if port_open(REDIS_PORT):
        raise SystemExit(f"lab: port {REDIS_PORT} is taken by another program; set LAB_REDIS_PORT")
    run("redis-server", str(config))
    wait_for(lambda: port_open(REDIS_PORT), "Redis")
    log(f"Redis listening on port {REDIS_PORT}")


def redis_down() -> None:
    pid = pid_alive(STATE / "redis" / "redis.pid")
    if pid:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not port_open(REDIS_PORT), "Redis (stopping)")


# --- HAProxy, the stand-in for the ALB ------------------------------------------------------

def lb_up() -> None:
    """HAProxy in master-worker mode; the lab controller writes its backends from the target
    group and reloads it (SIGUSR2), so it follows registrations as the ALB does
    (lab/loadbalancer.py)."""
    config = STATE / "haproxy.cfg"
    if not config.exists():
        config.write_text(
            "# Replaced by the lab controller (lab/loadbalancer.py) from the target group.\n"
            f"global\n  maxconn 256\n  stats socket {STATE}/haproxy.sock mode 600 level admin\n"
            "defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n"
            f"frontend app\n  bind 127.0.0.1:{LB_PORT}\n  default_backend app\n"
            "backend app\n"
        )
    if pid_alive(STATE / "haproxy.pid"):
        return
    run("haproxy", "-W", "-D", "-p", str(STATE / "haproxy.pid"), "-f", str(config))
    wait_for(lambda: port_open(LB_PORT), "HAProxy")
    log(f"load balancer (HAProxy) listening on 127.0.0.1:{LB_PORT}")


# --- the key pair of the lab's instances ---------------------------------------------------

def ssh_key_up() -> None:
    """The lab's key pair, the stand-in for an EC2 key pair: the lab controller mounts the
    public key as the instances' authorized key, inventories/local connects with the private."""
    key = STATE / "ssh" / "id_ed25519"
    # Where inventories/local keeps one SSH control socket per instance.
    (Path.home() / ".ansible" / "cp").mkdir(parents=True, exist_ok=True)
    if key.exists():
        return
    key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"chatmrpt-lab {NETWORK}", "-f", str(key))
    # sshd accepts an authorized_keys file owned by root and not writable by others.
    (key.parent / "id_ed25519.pub").chmod(0o644)


# --- podman network and base image ---------------------------------------------------------

def network_up() -> None:
    """The podman network, and its bridge with the gateway address now: podman makes the
    bridge only when the first container joins, and the lab's services listen on it before."""
    if run("podman", "network", "exists", NETWORK, check=False).returncode != 0:
        run("podman", "network", "create", "--subnet", SUBNET, "--label", f"{LABEL}={NETWORK}", NETWORK)
        log(f"podman network {NETWORK} ({SUBNET}) created")
    bridge, gateway = bridge_and_gateway()
    if f" {gateway}/" not in run("ip", "-o", "-4", "addr", "show", "dev", bridge, check=False).stdout:
        run("ip", "link", "add", bridge, "type", "bridge", check=False)  # (exists already: fine)
        run("ip", "addr", "add", f"{gateway}/{SUBNET.split('/')[1]}", "dev", bridge)
    run("ip", "link", "set", bridge, "up")


@functools.cache
def bridge_and_gateway() -> tuple[str, str]:
    """The network's bridge and gateway (inspected once per command: they never change)."""
    out = run("podman", "network", "inspect", NETWORK, "--format",
              "{{.NetworkInterface}} {{range .Subnets}}{{.Gateway}}{{end}}").stdout.split()
    return out[0], out[1]


def listen_addresses() -> list[str]:
    """Where the lab's services listen: the loopback (the controller) and the bridge's gateway
    (the instances), and nowhere else."""
    return ["127.0.0.1", bridge_and_gateway()[1]]


def lab_base_image() -> str:
    return f"{LAB_BASE_REPOSITORY}:{NETWORK}"


def image_up() -> str:
    """Builds the base image if its recipe changed and tags it for this lab, the image the
    controller starts instances of non-golden AMIs from: `latest` and the recipe's tag may be
    retagged or removed by a lab of another checkout (build.sh removes other recipes)."""
    out = subprocess.run([str(ROOT / "lab" / "image" / "build.sh")], check=True, text=True, stdout=subprocess.PIPE,
                         env={**os.environ, "CONTAINERS_CONF": CONTAINERS_CONF}).stdout
    print(out, end="", flush=True)
    built = next(word for word in reversed(out.split()) if word.startswith("localhost/"))
    run("podman", "tag", built, lab_base_image())
    return lab_base_image()


def sample_app_archive() -> None:
    """The app the local estate deploys: tests/sample_app (ChatMRPT's shape, without its
    GPU-sized requirements) as a release archive. Byte-for-byte reproducible, so the app
    role sees the same release until the sample changes."""
    import gzip
    import io
    import tarfile

    source = ROOT / "tests" / "sample_app"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in source.rglob("*") if "__pycache__" not in p.parts):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(source)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o755 if path.is_dir() else 0o644
            with open(path, "rb") if path.is_file() else io.BytesIO() as data:
                tar.addfile(info, data if path.is_file() else None)
    archive = STATE / "sample-app.tar.gz"
    content = gzip.compress(buffer.getvalue(), mtime=0)
    if not archive.exists() or archive.read_bytes() != content:
        archive.write_bytes(content)


def lab_containers() -> list[str]:
    out = run("podman", "ps", "-a", "--filter", f"label={LABEL}={NETWORK}", "--format", "{{.Names}}").stdout
    return out.split()


# --- commands -------------------------------------------------------------------------------

def environment() -> dict[str, str]:
    return {
        "CONTAINERS_CONF": CONTAINERS_CONF,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{MOTO_PORT}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # pragma: allowlist secret
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
        "CHATMRPT_LAB_STATE_DIR": str(STATE),
        # Read by inventories/local: several labs can run side by side (tests, engineers).
        "CHATMRPT_LAB_SUBNET": SUBNET,
        "CHATMRPT_LAB_MOTO_PORT": str(MOTO_PORT),
        "CHATMRPT_LAB_PG_PORT": str(PG_PORT),
        "CHATMRPT_LAB_REDIS_PORT": str(REDIS_PORT),
        "CHATMRPT_LAB_LB_PORT": str(LB_PORT),
    }


def cmd_up() -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    base_image = image_up()
    sample_app_archive()
    ssh_key_up()
    network_up()
    moto_up(base_image)
    pg_up()
    # RDS's master password and ElastiCache's AUTH token, where the estate reads them
    store_secret_once("/chatmrpt/local/database/master-password", STATE / "pg" / "master-password")
    redis_up()
    store_secret_once("/chatmrpt/local/cache/auth-token", STATE / "redis" / "auth-token")
    lb_up()
    bridge, gateway = bridge_and_gateway()
    facts = {
        "moto_port": MOTO_PORT, "pg_port": PG_PORT, "pg_master_user": PG_SUPERUSER, "redis_port": REDIS_PORT,
        "redis_pidfile": str(STATE / "redis" / "redis.pid"),
        "pg_master_password_file": str(STATE / "pg" / "master-password"),
        "network": NETWORK, "subnet": SUBNET, "label": LABEL, "name": NETWORK,
        "bridge": bridge, "gateway": gateway,
        "lb_port": LB_PORT, "lb_config": str(STATE / "haproxy.cfg"), "lb_pidfile": str(STATE / "haproxy.pid"),
        "ssh_public_key": str(STATE / "ssh" / "id_ed25519.pub"),
    }
    (STATE / "lab.json").write_text(json.dumps(facts, indent=2) + "\n")
    log("up")
    return 0


def cmd_status() -> int:
    checks = {
        "AWS emulator": pid_alive(STATE / "moto.pid") is not None and port_open(MOTO_PORT),
        "PostgreSQL": port_open(PG_PORT),
        "Redis": pid_alive(STATE / "redis" / "redis.pid") is not None and port_open(REDIS_PORT),
        "load balancer": pid_alive(STATE / "haproxy.pid") is not None and port_open(LB_PORT),
        "podman network": run("podman", "network", "exists", NETWORK, check=False).returncode == 0,
        "lab controller": controller_alive(),
    }
    for name, ok in checks.items():
        print(f"{name:16} {'up' if ok else 'down'}")
    containers = run("podman", "ps", "-a", "--filter", f"label={LABEL}={NETWORK}",
                     "--format", "{{.Names}} {{.Status}}").stdout.strip()
    print("instances        " + (containers.replace("\n", "\n                 ") or "none"))
    return 0 if all(checks.values()) else 1


def controller_alive() -> bool:
    """The controller marks each pass over the emulator's instances (about every second)."""
    try:
        return time.time() - (STATE / "controller.heartbeat").stat().st_mtime < 15
    except FileNotFoundError:
        return False


def lab_golden_images() -> list[str]:
    """The golden images the lab controller committed for CreateImage (labelled with the lab's name)."""
    out = run("podman", "images", "--filter", f"label={LABEL}={NETWORK}", "--filter",
              "reference=localhost/chatmrpt-golden", "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout
    return sorted(set(out.split()))


def cmd_down() -> int:
    # The emulator first: its controller would start the instances' containers again.
    pid = pid_alive(STATE / "moto.pid")
    if pid:
        os.killpg(pid, signal.SIGTERM)
        wait_for(lambda: pid_alive(STATE / "moto.pid") is None, "the AWS emulator (stopping)")
    for name in lab_containers():
        run("podman", "rm", "-f", "-t", "5", name, check=False)
    for image in lab_golden_images():  # other labs' images carry their own lab name
        run("podman", "rmi", image, check=False)
    run("podman", "rmi", lab_base_image(), check=False)  # only this lab's tag: the base image stays
    if run("podman", "network", "exists", NETWORK, check=False).returncode == 0:
        bridge = bridge_and_gateway()[0]
        run("podman", "network", "rm", "-f", NETWORK, check=False)
        run("ip", "link", "del", bridge, check=False)  # (the lab made it; podman may have removed it)
    pid = pid_alive(STATE / "haproxy.pid")
    if pid:
        os.kill(pid, signal.SIGTERM)
    pg_down()
    redis_down()
    shutil.rmtree(STATE, ignore_errors=True)
    log("down: containers, golden images, network, emulator, PostgreSQL, Redis, load balancer and state removed")
    return 0


def cmd_env() -> int:
    for key, value in environment().items():
        print(f"export {key}={value}")
    return 0


def main(argv: list[str]) -> int:
    commands = {"up": cmd_up, "status": cmd_status, "down": cmd_down, "env": cmd_env}
    if len(argv) != 2 or argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[1]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
