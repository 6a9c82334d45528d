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
