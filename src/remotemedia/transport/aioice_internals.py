"""aioice's internals, patched from this module only, when the WebRTC edge starts.

Importing this module changes nothing: :func:`offer_only` patches aioice, and the
WebRTC edge (:mod:`~remotemedia.transport.webrtc`) calls it when it starts, if
``--webrtc-host-address`` names the addresses to offer. The patch is written for the
aioice versions in :data:`WRITTEN_FOR` (``tests/unit/test_third_party_pins.py``
fails on any other, and ``pyproject.toml`` pins the same). Before allowing another
version, re-check the item against its source:

1. ``aioice.ice.get_host_addresses(use_ipv4, use_ipv6)``, the name
   ``Connection.gather_candidates`` looks up each time it gathers, lists the
   addresses offered as host candidates: every address of every interface but
   loopback, with no option (aioice issue #2; RFC 8445 5.1.1.1 keeps loopback out
   of candidates). It becomes a function that lists the allowlisted addresses this
   machine has, loopback included: a server behind one public interface offers just
   that one, and the tests, in a network with only loopback, offer 127.0.0.1.

The patch is process-wide (aioice has no per-connection hook), as is the one server
a process runs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

import ifaddr
from aioice import ice

from remotemedia.config import ConfigError

__all__ = ["DISTRIBUTION", "WRITTEN_FOR", "local_addresses", "offer_only"]

DISTRIBUTION = "aioice"
"""The distribution this module patches."""
WRITTEN_FOR = ("0.13.0",)
"""aioice versions whose source item 1 was checked against."""


def local_addresses() -> list[str]:
    """Every IP address of this machine's interfaces, loopback included."""
    addresses = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                addresses.append(ip.ip)
            elif ip.ip[2] == 0:  # an IPv6 address without a scope (not link-local)
                addresses.append(ip.ip[0])
    return addresses


def offer_only(allowed: Sequence[str]) -> None:
    """Make aioice offer only the ``allowed`` addresses as host candidates (item 1).

    Raises:
        ConfigError: An address is not one of this machine's.
    """
    mine = set(local_addresses())
    missing = [address for address in allowed if address not in mine]
    if missing:
        raise ConfigError(
            f"--webrtc-host-address {', '.join(missing)}: not an address of this machine "
            f"(it has {', '.join(sorted(mine))})."
        )
    setattr(ice, "get_host_addresses", _allowlisted(tuple(allowed)))  # noqa: B010 - item 1


def _allowlisted(allowed: tuple[str, ...]) -> Callable[[bool, bool], list[str]]:
    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        chosen = []
        for address in allowed:
            version = ipaddress.ip_address(address).version
            if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
                chosen.append(address)
        return chosen

    return get_host_addresses
