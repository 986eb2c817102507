"""The host names the browser edge answers to: its defence against DNS rebinding.

A page on ``evil.example`` whose DNS answer changes to this server's address (DNS
rebinding) reaches the server from the user's browser as ``evil.example``: its
requests carry ``Host: evil.example`` and ``Origin: http://evil.example``, so an
``Origin`` check against ``Host`` passes. Its name is the one thing it cannot
change, so every request's ``Host`` must be a name the server answers to (as dev
servers do: webpack's ``allowedHosts``, Vite's ``server.allowedHosts``).

Rules (:meth:`HostNames.allows`):

1. A request without ``Host`` (HTTP/1.0) is served: no browser sends one.
2. The name is the header with its port and IPv6 brackets taken off, in lower case,
   without a trailing dot; a header that is not ``name[:port]`` or ``[ip][:port]``
   is refused.
3. Any IP literal is allowed: rebinding needs a DNS name.
4. ``localhost`` and every name under ``.localhost`` are allowed (browsers resolve
   them to loopback themselves).
5. This machine's host name (``socket.gethostname()``, given by the caller) is
   allowed: its operator names it, not a web page. Not its FQDN, which would take a
   DNS lookup.
6. Then ``--web-allowed-hosts``: a name allows itself, ``.example.com`` allows
   ``example.com`` and every name under it, ``*`` allows any name (no check).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

import attrs

__all__ = ["HostNames"]

_PORT = re.compile(r"(?::[0-9]*)?")
"""What may follow the name in ``Host``: nothing, or a colon and ASCII digits."""


@attrs.frozen
class HostNames:
    """The host names the browser edge answers to (see the rules above); :meth:`of` builds it.

    Attributes:
        names: Exact names, lower case, without a trailing dot.
        suffixes: ``.example.com`` entries: that name and every name under it.
        any: ``*`` was given: every name.
    """

    names: frozenset[str]
    suffixes: tuple[str, ...] = ()
    any: bool = False

    @classmethod
    def of(cls, allowed: Sequence[str], own: str = "") -> HostNames:
        """``--web-allowed-hosts`` entries, plus ``own`` (this machine's name) and localhost."""
        entries = [_normal(entry) for entry in (*allowed, own) if entry]
        return cls(
            names=frozenset(e for e in entries if not e.startswith(".")) | {"localhost"},
            suffixes=(".localhost", *(e for e in entries if e.startswith(".") and e != ".")),
            any="*" in entries,
        )

    def allows(self, host: str | None) -> bool:
        """Whether a request whose ``Host`` header is ``host`` is for this server."""
        if not host:
            return True  # HTTP/1.0 without Host: no browser, no page to rebind
        name = _hostname(host)
        if name is None:
            return False
        if self.any or name in self.names or _is_ip(name):
            return True
        return any(name == s[1:] or name.endswith(s) for s in self.suffixes)


def _normal(name: str) -> str:
    name = name.strip().lower()
    return name[:-1] if name.endswith(".") and name != "." else name


def _hostname(host: str) -> str | None:
    """The name in a ``Host`` header (port and IPv6 brackets off), or None if malformed."""
    host = host.strip()
    if host.startswith("["):
        literal, bracket, rest = host[1:].partition("]")
        return literal if bracket and _PORT.fullmatch(rest) and _is_ip(literal) else None
    if host.count(":") > 1:
        return _normal(host)  # an IPv6 address without brackets (not what a browser sends)
    name, colon, port = host.partition(":")
    return _normal(name) if _PORT.fullmatch(colon + port) else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
