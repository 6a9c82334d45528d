#!/usr/bin/env python3
"""The lab's AWS emulator: one moto, listening on the given addresses only (the loopback for
the controller, the lab bridge's gateway for the instances, which know it as
host.containers.internal), never on every interface. The servers share one process, so
they share the emulator's state.

    emulator_server.py PORT ADDRESS...
"""

from __future__ import annotations

import signal
import sys

from moto.server import ThreadedMotoServer


def main(argv: list[str]) -> int:
    port, addresses = int(argv[1]), argv[2:]
    servers = [ThreadedMotoServer(ip_address=address, port=port, verbose=False) for address in addresses]
    for server in servers:
        server.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    for server in servers:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
