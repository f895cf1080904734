"""The load test's target: a parsed URL, checked to be on this machine before a single byte is sent.

A load tester is a traffic cannon, so it refuses to aim off the machine by default. The host is *resolved*
(``getaddrinfo``) and every address it resolves to must be loopback — 127.0.0.0/8 or ::1 — because a name like
``localhost.example.com`` or an ``/etc/hosts`` entry can point anywhere. A host that does not resolve is refused
too. ``allow_remote=True`` (``--allow-remote``) skips the check for the operator who means it.

The URL may name the endpoint (``http://127.0.0.1:8080/v1/chat/completions``) or just the server or its ``/v1``
base, which are completed to ``/v1/chat/completions``.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["CHAT_PATH", "Target", "TargetError", "is_loopback_address", "resolve_target"]

CHAT_PATH = "/v1/chat/completions"


class TargetError(ValueError):
    """A target that cannot or may not be load-tested (bad URL, unresolvable, or outside loopback)."""


@dataclass(frozen=True, slots=True)
class Target:
    url: str  # the full endpoint URL after completion
    host: str  # as written in the URL (brackets stripped from IPv6 literals)
    port: int
    path: str
    tls: bool
    addresses: tuple[str, ...]  # what the host resolved to (empty when the check was skipped)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = 443 if self.tls else 80
        return host if self.port == default_port else f"{host}:{self.port}"


def is_loopback_address(address: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (an IPv4-mapped ``::ffff:127.x.y.z`` counts as its IPv4 address)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def resolve_target(url: str, *, allow_remote: bool = False) -> Target:
    """Parse ``url`` and, unless ``allow_remote``, make sure every address its host resolves to is loopback."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https"):
        raise TargetError(f"unsupported scheme {parts.scheme!r} in {url!r}: use http:// or https://")
    host = parts.hostname
    if not host:
        raise TargetError(f"no host in {url!r}")
    tls = parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise TargetError(f"bad port in {url!r}") from None
    path = parts.path.rstrip("/")
    if path in ("", "/v1"):
        path = CHAT_PATH
    if parts.query:
        path = f"{path}?{parts.query}"
    addresses: tuple[str, ...] = ()
    if not allow_remote:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise TargetError(f"cannot resolve {host!r} ({exc}); refusing to load-test it") from None
        addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
        remote = [a for a in addresses if not is_loopback_address(a)]
        if remote or not addresses:
            raise TargetError(
                f"refusing to load-test {host!r}: it resolves to {', '.join(remote or addresses) or 'nothing'}, "
                "outside loopback (127.0.0.0/8, ::1). Pass --allow-remote if you really mean to."
            )
    scheme = "https" if tls else "http"
    netloc = f"[{host}]" if ":" in host else host
    return Target(
        url=f"{scheme}://{netloc}:{port}{path}",
        host=host,
        port=port,
        path=path,
        tls=tls,
        addresses=addresses,
    )
