"""Where servers listen. Everything binds 127.0.0.1 by default: nemo_gym's servers have no authentication, and the
head server hands out the (redacted) config and every instance's address. Binding elsewhere is allowed, but it is
a choice that must not go unnoticed, so the commands that start servers say so on stderr."""

from __future__ import annotations

import ipaddress
import sys
from typing import TextIO

from nemo_gym.config.types import GlobalConfig

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and the usual names for them; anything else (0.0.0.0, ::, a LAN address, a host name that
    may resolve anywhere) is reachable from other machines."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure_warning(what: str, host: str) -> str:
    return (
        f"warning: {what} binds {host}, not 127.0.0.1: it is reachable from other machines, and nemo_gym "
        "servers have no authentication. Remove the host setting to keep it on loopback."
    )


def exposed(config: GlobalConfig) -> list[tuple[str, str]]:
    """(what, host) of the head server and every instance configured to bind a non-loopback address."""
    found = [] if is_loopback(config.head_host) else [("the head server (head_server.host)", config.head_host)]
    for name, spec in config.instances.items():
        host = str(spec.config.get("host", "127.0.0.1"))
        if not is_loopback(host):
            found.append((f"instance '{name}' ({spec.server_type}/{spec.impl})", host))
    return found


def warn_if_exposed(config: GlobalConfig, *, prefix: str = "ng_run", stream: TextIO | None = None) -> None:
    """One flushed stderr line per server that will listen beyond this machine."""
    for what, host in exposed(config):
        print(f"{prefix}: {exposure_warning(what, host)}", file=stream or sys.stderr, flush=True)
