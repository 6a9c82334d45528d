"""The lab controller: keeps podman in step with the AWS emulator, as AWS keeps its machines
in step with its API, so that playbooks only change the emulator.

It runs inside the emulator's process (lab/emulator_server.py) and reads moto's EC2 state
directly:
- every pending or running instance gets a podman container (systemd inside) named after
  it, with its private IP on the lab network, started from the local image of its AMI, and
  booted by real cloud-init with the instance's user data (a NoCloud seed per instance);
  the container of an instance that is stopped or terminated is removed, once the load
  balancer has drained it;
- CreateImage leaves the AMI `pending` while the source instance's container is stopped,
  committed as localhost/chatmrpt-golden:<AMI id> and started again, then `available`, as
  EC2 snapshots an instance; DeregisterImage removes that local image;
- HAProxy, the ALB's stand-in, follows the target group, and the emulator reports HAProxy's
  health checks as the targets' health (lab/loadbalancer.py).
Everything it does goes to the log file it is given.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from loadbalancer import LoadBalancer

GOLDEN_REPOSITORY = "localhost/chatmrpt-golden"
INSTANCE_LABEL = "io.chatmrpt.instance-id"
IMAGE_LABEL = "io.chatmrpt.image-id"
SEED_MOUNT = "/var/lib/chatmrpt-lab/seed"  # cloud-init's NoCloud `seedfrom` (lab/image/cloud-nocloud.cfg)
LIVE_STATES = ("pending", "running")
log = logging.getLogger("lab.controller")


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    network: str
    label: str  # the lab's container label; its value is the lab's name (= network)
    ssh_public_key: Path
    base_image: str
    lb_port: int


@dataclass(frozen=True)
class Instance:
    instance_id: str
    image_id: str
    private_ip: str
    user_data: bytes


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], text=True, capture_output=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {result.stderr.strip()}")
    return result


def golden_image(image_id: str) -> str:
    return f"{GOLDEN_REPOSITORY}:{image_id}"


def decoded_user_data(user_data) -> bytes:
    """moto keeps the user data base64-encoded, as RunInstances or the launch template gave it."""
    import base64

    if not user_data:
        return b""
    raw = user_data.as_bytes() if hasattr(user_data, "as_bytes") else str(user_data).encode()
    return base64.b64decode(raw)


def ec2_backends():
    from moto.ec2.models import ec2_backends as backends

    for regions in list(backends.values()):
        yield from list(regions.values())


def live_instances() -> list[Instance]:
    found = []
    for backend in ec2_backends():
        for instance in list(backend.all_instances()):
            if instance.state in LIVE_STATES and instance.private_ip:
                found.append(Instance(instance.id, instance.image_id, instance.private_ip,
                                      decoded_user_data(instance.user_data)))
    return found


def find_ami(image_id: str):
    for backend in ec2_backends():
        if image_id in backend.amis:
            return backend.amis[image_id]
    return None


class Controller:
    def __init__(self, settings: Settings, interval: float = 1.0):
        self.settings = settings
        self.interval = interval
        self.lock = threading.Lock()  # one podman change at a time: reconciling or imaging
        self.heartbeat = settings.state_dir / "controller.heartbeat"
        self.stopping = threading.Event()
        self.balancer = LoadBalancer(settings.state_dir, settings.lb_port)

    # --- instances -----------------------------------------------------------------

    def containers(self) -> set[str]:
        """The lab's instance containers: named after their instance-id label (a container of a
        golden image run by hand inherits the lab's labels, with an empty instance id)."""
        out = podman("ps", "-a", "--filter", f"label={self.settings.label}={self.settings.network}",
                     "--format", f'{{{{.Names}}}} {{{{index .Labels "{INSTANCE_LABEL}"}}}}').stdout
        return {fields[0] for fields in map(str.split, out.splitlines()) if len(fields) == 2 and fields[0] == fields[1]}

    def reconcile(self) -> None:
        with self.lock:
            wanted = {instance.instance_id: instance for instance in live_instances()}
            existing = self.containers()
            # Removals first: the emulator may give a new instance a gone one's private IP. An
            # instance the load balancer still drains keeps its container until its last
            # request ended, as the Auto Scaling group terminates an instance after its
            # target's deregistration delay.
            with self.balancer.lock:
                draining = set(self.balancer.draining)
            for name in sorted(existing - set(wanted) - draining):
                self.remove_container(name)
            for instance_id in sorted(set(wanted) - existing):
                self.start_container(wanted[instance_id])

    def image_for(self, instance: Instance) -> str | None:
        """The local image of the instance's AMI; None while that AMI is still being made."""
        ami = find_ami(instance.image_id)
        if ami is not None and ami.state == "pending":
            return None
        if podman("image", "exists", golden_image(instance.image_id), check=False).returncode == 0:
            return golden_image(instance.image_id)
        return self.settings.base_image

    def write_seed(self, instance: Instance) -> Path:
        seed = self.settings.state_dir / "instances" / instance.instance_id / "seed"
        seed.mkdir(parents=True, exist_ok=True)
        (seed / "meta-data").write_text(f"instance-id: {instance.instance_id}\n"
                                        f"local-hostname: {instance.instance_id}\n")
        (seed / "user-data").write_bytes(instance.user_data or b"#cloud-config\n{}\n")
        return seed

    def start_container(self, instance: Instance) -> None:
        image = self.image_for(instance)
        if image is None:
            log.info("%s waits: its AMI %s is still pending", instance.instance_id, instance.image_id)
            return
        seed = self.write_seed(instance)
        podman(
            "run", "--detach", "--name", instance.instance_id, "--hostname", instance.instance_id,
            "--network", self.settings.network, "--ip", instance.private_ip,
            "--systemd", "always", "--cap-add", "SYS_ADMIN",
            # The key pair's public key, as EC2 installs it at launch; the instance's NoCloud seed.
            "--volume", f"{self.settings.ssh_public_key}:/home/admin/.ssh/authorized_keys:ro",
            "--volume", f"{seed}:{SEED_MOUNT}:ro",
            "--label", f"{self.settings.label}={self.settings.network}",
            "--label", f"{INSTANCE_LABEL}={instance.instance_id}",
            "--label", f"{IMAGE_LABEL}={instance.image_id}",
            image, "/sbin/init",
        )
        log.info("started %s (%s, %s) from %s", instance.instance_id, instance.private_ip, instance.image_id, image)

    def remove_container(self, name: str) -> None:
        podman("rm", "--force", "--time", "5", name)
        shutil.rmtree(self.settings.state_dir / "instances" / name, ignore_errors=True)
        log.info("removed %s (instance stopped or terminated)", name)

    def run(self) -> None:
        log.info("following the emulator's instances every %.0f s", self.interval)
        while not self.stopping.is_set():
            try:
                self.reconcile()
                self.balancer.follow()
            except Exception:  # noqa: BLE001 - a failed pass is logged and retried, never fatal
                log.exception("reconcile failed; retrying")
            self.heartbeat.touch()
            self.stopping.wait(self.interval)

    # --- images --------------------------------------------------------------------

    def image_instance(self, instance_id: str, ami) -> None:
        """As EC2 snapshots a stopped instance: stop, commit, start again; then the AMI is available."""
        try:
            with self.lock:
                started = time.monotonic()
                podman("stop", "--time", "30", instance_id)
                podman("commit", "--quiet",
                       "--change", f"LABEL={self.settings.label}={self.settings.network}",
                       "--change", f"LABEL={IMAGE_LABEL}={ami.id}",
                       "--change", f"LABEL={INSTANCE_LABEL}=",
                       "--change", f"LABEL=io.chatmrpt.golden-name={ami.name}",
                       instance_id, golden_image(ami.id))
                podman("start", instance_id)
            ami.state = "available"
            log.info("committed %s as %s in %.0f s", instance_id, golden_image(ami.id), time.monotonic() - started)
        except Exception:  # noqa: BLE001 - EC2 says `failed` too when it cannot make the image
            ami.state = "failed"
            log.exception("imaging %s as %s failed", instance_id, ami.id)

    def image_removed(self, image_id: str) -> None:
        result = podman("rmi", golden_image(image_id), check=False)
        # podman rmi: 0 removed, 1 no such image, 2 a container still uses it (lab.py down removes it)
        log.info("AMI %s deregistered: local image %s", image_id,
                 {0: "removed", 1: "absent"}.get(result.returncode, "kept, a container uses it"))

    def hook_moto(self) -> None:
        """CreateImage and DeregisterImage also make and remove the local image."""
        from moto.ec2.models import EC2Backend

        create_image, deregister_image = EC2Backend.create_image, EC2Backend.deregister_image
        controller = self

        def create_image_and_local_image(backend, instance_id, *args, **kwargs):
            ami = create_image(backend, instance_id, *args, **kwargs)
            ami.state = "pending"
            threading.Thread(target=controller.image_instance, args=(instance_id, ami), daemon=True).start()
            return ami

        def deregister_image_and_local_image(backend, ami_id, *args, **kwargs):
            deregister_image(backend, ami_id, *args, **kwargs)
            controller.image_removed(ami_id)

        EC2Backend.create_image = create_image_and_local_image
        EC2Backend.deregister_image = deregister_image_and_local_image
        self.balancer.hook_moto()


def start(settings: Settings, log_file: Path) -> Controller:
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    os.environ.setdefault("CONTAINERS_CONF", str(Path(__file__).resolve().parent / "containers.conf"))
    controller = Controller(settings)
    controller.hook_moto()
    threading.Thread(target=controller.run, name="lab-controller", daemon=True).start()
    return controller
