"""Which ``Host`` a write may name: the plugin's defence against DNS rebinding.

A page on ``http://rebind.evil.example:6006`` whose name the attacker points
at 127.0.0.1 talks to a local TensorBoard as its own origin: ``Origin`` and
``Host`` agree, so comparing them stops nothing. Like Jupyter's
``allow_remote_access``, the plugin accepts a write only when its ``Host``
names this server:

- loopback names (``localhost``, ``*.localhost``) and loopback addresses
  (``127.0.0.0/8``, ``::1``);
- the ``--host`` that TensorBoard was given;
- with ``--bind_all`` (or ``--host 0.0.0.0`` / ``::``), any IP address and
  this machine's own host name;
- the names in the environment variable ``TB_RETUNE_ALLOWED_HOSTS``
  (comma-separated, e.g. ``tb.example.org,gpu-3``; ``*`` allows any Host, for
  a TensorBoard behind a proxy that checks names itself).

Reads are not limited: TensorBoard serves its own data to any Host.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any

#: The environment variable with the extra names a write may come to.
ALLOWED_HOSTS_ENV = "TB_RETUNE_ALLOWED_HOSTS"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})


def host_name(header: str) -> str:
    """The name or address in a ``Host`` header, lower-case, without port or brackets."""
    host = header.strip().lower()
    if host.startswith("["):  # [::1]:6006
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _address(name: str) -> Any:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class HostPolicy:
    """The Hosts that name this server, from TensorBoard's flags and the environment.

    Args:
        flag_host: TensorBoard's ``--host`` (None: the default, localhost).
        bind_all: TensorBoard's ``--bind_all``.
        allowed: Extra names (``TB_RETUNE_ALLOWED_HOSTS``); ``*`` allows any.
    """

    def __init__(self, flag_host: str | None = None, bind_all: bool = False, allowed: Iterable[str] = ()) -> None:
        self.flag_host = host_name(flag_host) if flag_host else None
        self.any_address = bool(bind_all) or (flag_host is not None and self.flag_host in _ANY_ADDRESS)
        self.allowed = {host_name(a) for a in allowed if a.strip()}
        self.any_host = "*" in self.allowed
        self.names = set(LOOPBACK_NAMES) | self.allowed
        if self.flag_host and self.flag_host not in _ANY_ADDRESS:
            self.names.add(self.flag_host)
        if self.any_address:
            self.names |= {host_name(socket.gethostname()), host_name(socket.getfqdn())}

    @classmethod
    def from_flags(cls, flags: Any, environ: Mapping[str, str] | None = None) -> HostPolicy:
        """The policy of a TensorBoard started with ``flags`` (``context.flags``)."""
        env = os.environ if environ is None else environ
        extra = env.get(ALLOWED_HOSTS_ENV, "").split(",")
        return cls(getattr(flags, "host", None), bool(getattr(flags, "bind_all", False)), extra)

    def allows(self, header: str | None) -> bool:
        """Whether a request with this ``Host`` header may write.

        A request without one (HTTP/1.0, no browser) cannot be a rebinding attack.
        """
        if header is None or self.any_host:
            return True
        name = host_name(header)
        if name in self.names or name.endswith(".localhost"):
            return True
        address = _address(name)
        if address is None:
            return False
        if address.is_loopback or self.any_address:
            return True
        flag = _address(self.flag_host) if self.flag_host else None
        return flag is not None and flag == address

    def refusal(self, header: str) -> str:
        """The message of a refused write."""
        names = sorted(n for n in self.names if n not in LOOPBACK_NAMES)
        extra = f", {', '.join(names)}" if names else ""
        return (
            f"write refused: the Host {header[:100]!r} does not name this TensorBoard (a protection "
            f"against DNS rebinding); writes are accepted for localhost, 127.0.0.1, ::1{extra}. "
            f"Open TensorBoard by one of these names, start it with --host NAME, or allow the "
            f"name with the environment variable {ALLOWED_HOSTS_ENV}=NAME (comma-separated)"
        )
