#!/usr/bin/env python3
"""The lab's AWS emulator: one moto, listening on the given addresses only (the loopback for
the controller, the lab bridge's gateway for the instances, which know it as
host.containers.internal), never on every interface. The servers share one process, so
they share the emulator's state. With --controller, the lab controller (lab/controller.py)
runs in the same process and keeps podman in step with that state. Two moto defects that
AWS does not have are mended here (mend_*), each with a test that fails once moto is fixed
(tests/unit/test_lab_emulator.py).

    emulator_server.py [--controller SETTINGS.json] PORT ADDRESS...
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from moto.server import ThreadedMotoServer


def mend_launch_template_versions() -> None:
    """moto 5.x keeps the UserData of CreateLaunchTemplateVersion as the raw string, where
    CreateLaunchTemplate wraps it (parse_user_data): an Auto Scaling group that launches from
    such a version (the golden image's, aws_compute's entry point `template`) then fails with
    HTTP 500 (an assert in LaunchTemplateVersion.user_data). EC2 keeps both the same way, so
    the lab's emulator wraps it too."""
    from moto.ec2.models.launch_templates import LaunchTemplate
    from moto.ec2.utils import parse_user_data

    create_version = LaunchTemplate.create_version

    def create_version_with_parsed_user_data(self, data, description):
        if isinstance(data.get("UserData"), str):
            data = {**data, "UserData": parse_user_data(data["UserData"])}
        return create_version(self, data, description)

    LaunchTemplate.create_version = create_version_with_parsed_user_data


def mend_target_group_deregistration() -> None:
    """moto 5.x registers an Auto Scaling group's instances in its target groups but never
    deregisters one that left the group (scale-in, detach, terminate through the group): its
    stale target stays registered. AWS deregisters it, and the target drains before the
    instance terminates. The lab's emulator deregisters such targets (an instance the group
    launched or attached, no longer among its instances); the load balancer then drains it
    (lab/loadbalancer.py) and the controller keeps its container until it has drained."""
    from moto.autoscaling.models import AutoScalingBackend

    update_attached_target_groups = AutoScalingBackend.update_attached_target_groups

    def update_and_deregister_leavers(self, group_name):
        update_attached_target_groups(self, group_name)
        group = self.autoscaling_groups[group_name]
        if not group.target_group_arns:
            return
        members = {state.instance.id for state in group.instance_states}
        launched = {instance.id for instance in self.ec2_backend.all_instances()
                    if getattr(instance, "autoscaling_group", None) is group}
        for target_group in self.elbv2_backend.describe_target_groups(
                target_group_arns=group.target_group_arns, load_balancer_arn=None, names=None):
            leavers = [{"Id": target_id} for target_id in list(target_group.targets)
                       if target_id in launched - members]
            if leavers:
                self.elbv2_backend.deregister_targets(target_group.arn, leavers)

    AutoScalingBackend.update_attached_target_groups = update_and_deregister_leavers


def start_controller(settings_file: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import controller

    settings = json.loads(settings_file.read_text())
    controller.start(controller.Settings(
        state_dir=Path(settings["state_dir"]), network=settings["network"], label=settings["label"],
        ssh_public_key=Path(settings["ssh_public_key"]), base_image=settings["base_image"],
        lb_port=settings["lb_port"],
    ), Path(settings["log_file"]))


def main(argv: list[str]) -> int:
    args = argv[1:]
    mend_launch_template_versions()
    mend_target_group_deregistration()
    if args[0] == "--controller":
        start_controller(Path(args[1]))
        args = args[2:]
    port, addresses = int(args[0]), args[1:]
    servers = [ThreadedMotoServer(ip_address=address, port=port, verbose=False) for address in addresses]
    for server in servers:
        server.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    for server in servers:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
