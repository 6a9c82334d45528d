"""HAProxy, the lab's stand-in for the ALB, follows the emulator's target group, and the
emulator reports HAProxy's own health checks as the targets' health, as the ALB does.

The lab controller (lab/controller.py) calls `follow` on every pass:
- a registered target becomes a server (the instance's private IP, the target's port),
  checked like the ALB checks it (GET the group's health check path, HTTP 200);
- a deregistered target is drained first: HAProxy stops sending it new requests at once
  (runtime API, no reload) and the emulator says `draining` until its last request ended
  (no session in HAProxy's statistics and no open connection to it from any HAProxy
  process) or the group's deregistration delay passed, then it leaves the configuration;
- the configuration is rewritten and HAProxy reloaded (SIGUSR2, master-worker mode) only
  when the set of servers changed.
DescribeTargetHealth then says `healthy` for a server HAProxy reports UP with a passed
check, `unhealthy` for one it reports DOWN, `initial` before its first check, and lists the
draining targets too, as the ALB does.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

log = logging.getLogger("lab.controller")
BACKEND = "app"


def instance_ips() -> dict[str, str]:
    from controller import ec2_backends

    return {instance.id: instance.private_ip for backend in ec2_backends()
            for instance in list(backend.all_instances()) if instance.private_ip}


def open_connections(ip: str, port: int) -> int:
    """Established TCP connections to a server, from every HAProxy process: a reload starts a
    new worker whose statistics do not count the requests the old one still finishes."""
    out = subprocess.run(["ss", "-Htn", "state", "established", "dst", ip, "dport", "=", f":{port}"],
                         capture_output=True, text=True, check=False).stdout
    return len(out.splitlines())


def target_groups():
    from moto.elbv2.models import elbv2_backends

    for regions in list(elbv2_backends.values()):
        for backend in list(regions.values()):
            yield from list(backend.target_groups.values())


class LoadBalancer:
    def __init__(self, state_dir: Path, port: int):
        self.config = state_dir / "haproxy.cfg"
        self.pidfile = state_dir / "haproxy.pid"
        self.socket = state_dir / "haproxy.sock"
        self.port = port
        self.group_arn: str | None = None
        self.servers: dict[str, tuple[str, int]] = {}  # in the configuration: id -> (ip, port)
        self.draining: dict[str, float] = {}  # target id -> when its draining began (monotonic)
        self.stats: dict[str, dict[str, str]] = {}
        self.lock = threading.Lock()  # the controller's passes and DeregisterTargets

    # --- HAProxy ---------------------------------------------------------------------

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket))
            sock.sendall(line.encode() + b"\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.decode()

    def read_stats(self) -> dict[str, dict[str, str]]:
        try:
            lines = self.command("show stat").splitlines()
        except OSError:
            return {}
        header = lines[0].removeprefix("# ").split(",") if lines else []
        rows = (dict(zip(header, line.split(","))) for line in lines[1:] if line)
        return {row["svname"]: row for row in rows if row.get("pxname") == BACKEND}

    def render(self, group) -> str:
        lines = [
            "# Written by the lab controller (lab/loadbalancer.py) from the target group "
            f"{group.name}, checked like the ALB checks it (GET {group.health_check_path}, HTTP 200).",
            "global", "  maxconn 256", f"  stats socket {self.socket} mode 600 level admin", "",
            "defaults", "  mode http", "  timeout connect 2s", "  timeout client 30s", "  timeout server 310s",
            "  retries 2", "  option redispatch",
            # (no idle server connections: an open one is a request in flight, see open_connections)
            "  option http-server-close", "  retry-on conn-failure empty-response response-timeout", "",
            "frontend app", f"  bind 127.0.0.1:{self.port}", f"  default_backend {BACKEND}", "",
            f"backend {BACKEND}", "  balance roundrobin", "  cookie AWSALB insert indirect nocache",
            f"  option httpchk GET {group.health_check_path or '/'}", "  http-check expect status 200",
            "  default-server inter 2s fall 3 rise 2",
        ]
        for target_id, (ip, port) in sorted(self.servers.items()):
            # A draining target takes no new requests, as behind the ALB.
            disabled = " disabled" if target_id in self.draining else ""
            lines.append(f"  server {target_id} {ip}:{port} check cookie {target_id}{disabled}")
        return "\n".join(lines) + "\n"

    def apply(self, group) -> None:
        text = self.render(group)
        if self.config.exists() and self.config.read_text() == text:
            return
        candidate = self.config.with_suffix(".new")
        candidate.write_text(text)
        candidate.chmod(0o600)
        subprocess.run(["haproxy", "-c", "-q", "-f", str(candidate)], check=True, capture_output=True)
        candidate.replace(self.config)
        try:
            os.kill(int(self.pidfile.read_text()), signal.SIGUSR2)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return  # not started yet: `lab.py up` starts it with this configuration
        log.info("load balancer follows %s: %s", group.name,
                 ", ".join(f"{t}{' (draining)' if t in self.draining else ''}" for t in sorted(self.servers)) or "no target")

    # --- the target group ------------------------------------------------------------

    def group(self):
        """The target group of the lab's load balancer (the one an ALB forwards to)."""
        groups = sorted((g for g in target_groups() if g.load_balancer_arns and g.target_type == "instance"),
                        key=lambda g: g.name)
        return groups[0] if groups else None

    def follow(self) -> None:
        with self.lock:
            self.follow_group()

    def follow_group(self) -> None:
        group = self.group()
        if group is None:
            return
        self.group_arn = group.arn
        self.stats = self.read_stats()
        ips = instance_ips()
        registered = {t["Id"]: (ips[t["Id"]], int(t["Port"])) for t in list(group.targets.values()) if t["Id"] in ips}
        for target_id in set(self.servers) - set(registered) - set(self.draining):
            self.drain(target_id)  # (TerminateInstances: moto deregisters the target itself)
        # As the ALB: draining ends with the last request, or after the deregistration delay.
        delay = int(group.attributes.get("deregistration_delay.timeout_seconds", 300))
        for target_id in list(self.draining):
            if target_id in registered:
                del self.draining[target_id]
            elif (self.stats.get(target_id, {}).get("scur", "0") == "0" and not open_connections(*self.servers[target_id])) \
                    or time.monotonic() - self.draining[target_id] > delay:
                del self.draining[target_id]
                self.servers.pop(target_id, None)
        self.servers.update(registered)
        self.apply(group)

    def drain(self, target_id: str) -> None:
        self.draining.setdefault(target_id, time.monotonic())
        try:
            self.command(f"disable server {BACKEND}/{target_id}")
        except OSError:
            pass  # HAProxy not running: nothing to drain
        self.stats = self.read_stats()
        log.info("draining %s", target_id)

    def health(self, group_arn: str, target_id: str, registered: bool) -> tuple[str, str | None] | None:
        """The state and reason the emulator reports for a target of the lab's group; None: moto's own."""
        ours = self.group()  # (not the last pass's: a registration may come before the next pass)
        if ours is None or group_arn != ours.arn:
            return None
        if not registered:
            return ("draining", "Target.DeregistrationInProgress") if target_id in self.draining else None
        row = self.stats.get(target_id)
        if row is None or not row.get("check_status"):
            return "initial", "Elb.RegistrationInProgress"
        if row["status"] == "UP" and row["check_status"] == "L7OK":
            return "healthy", None
        return ("unhealthy", "Target.FailedHealthChecks") if row["status"].startswith("DOWN") \
            else ("initial", "Elb.InitialHealthChecking")

    def hook_moto(self) -> None:
        from moto.elbv2.models import ELBv2Backend, FakeTargetGroup

        health_for, deregister = FakeTargetGroup.health_for, FakeTargetGroup.deregister
        describe_target_health = ELBv2Backend.describe_target_health
        balancer = self

        def describe_with_draining(backend, target_group_arn, targets):
            # DescribeTargetHealth with no targets lists the draining ones too, as the ALB does.
            found = describe_target_health(backend, target_group_arn, targets)
            if not targets and target_group_arn == balancer.group_arn:
                with balancer.lock:
                    draining = [{"Id": t, "Port": balancer.servers[t][1]} for t in sorted(balancer.draining)
                                if t in balancer.servers]
                listed = {status.instance_id for status in found}
                draining = [target for target in draining if target["Id"] not in listed]
                if draining:
                    found += describe_target_health(backend, target_group_arn, draining)
            return found

        def deregister_and_drain(group, targets):
            # At once, not at the next pass: the caller's next DescribeTargetHealth must say draining.
            deregister(group, targets)
            with balancer.lock:
                for target in targets:
                    if group.arn == balancer.group_arn and target["Id"] in balancer.servers:
                        balancer.drain(target["Id"])

        def health_from_haproxy(group, target, ec2_backend):
            status = health_for(group, target, ec2_backend)
            ours = balancer.health(group.arn, target["Id"], target["Id"] in group.targets)
            if ours is not None:
                status.status, status.reason = ours
                status.description = None
            return status

        FakeTargetGroup.health_for = health_from_haproxy
        FakeTargetGroup.deregister = deregister_and_drain
        ELBv2Backend.describe_target_health = describe_with_draining
