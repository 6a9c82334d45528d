#!/usr/bin/env python3
"""The lab's AWS emulator: one moto, listening on the given addresses only (the loopback for
the controller, the lab bridge's gateway for the instances, which know it as
host.containers.internal), never on every interface. The servers share one process, so
they share the emulator's state. With --controller, the lab controller (lab/controller.py)
runs in the same process and keeps podman in step with that state.

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
