"""Outbound URL safety for webhooks: only http(s), no credentials in the URL, and, unless the server allows
their network (MOCOLAB_NOTIFY_ALLOW_NETS), no host that resolves to a loopback, private, link-local, shared,
multicast or reserved address (a webhook must not become a way to reach the server's own network: SSRF).

The check runs when a channel is saved (a 422 at body.url) and again before every send, on the addresses the
request then connects to: the host is resolved once and the connection pinned to the checked address (the
TLS name and Host header stay the URL's), so a DNS answer that changes in between (rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_URL = 2048


class UnsafeUrl(ValueError):
    """A URL a webhook may not use; the message says why, for a 422."""


@dataclass(frozen=True)
class Target:
    url: str
    parts: SplitResult
    host: str  # as written (IDNA), without brackets
    port: int
    address: str  # the checked address the request connects to


def allowed_nets(spec: str) -> list[Network]:
    nets: list[Network] = []
    for chunk in spec.split(","):
        if chunk.strip():
            nets.append(ipaddress.ip_network(chunk.strip(), strict=False))
    return nets


def _blocked(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _blocked(ip.ipv4_mapped)
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified or not ip.is_global)


def parse(url: str) -> SplitResult:
    if len(url) > MAX_URL:
        raise UnsafeUrl(f"longer than {MAX_URL} characters")
    if any(c in url for c in "\r\n\t\x00 "):
        raise UnsafeUrl("contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("only http and https URLs are allowed")
    if not parts.hostname:
        raise UnsafeUrl("has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("must not carry a user or password (use a header instead)")
    if port == 0:
        raise UnsafeUrl("port 0")
    return parts


def resolve(url: str, allow: list[Network]) -> Target:
    """The URL checked and its host resolved to one address that is safe to connect to; raises UnsafeUrl."""
    parts = parse(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise UnsafeUrl(f"the host {host!r} does not resolve") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if not addresses:
            raise UnsafeUrl(f"the host {host!r} does not resolve")
    for ip in addresses:  # every address the name has must be acceptable, not just the first
        if _blocked(ip) and not any(ip in net for net in allow if net.version == ip.version):
            raise UnsafeUrl(f"the host {host!r} is a loopback, private or link-local address ({ip}); the server's "
                            "MOCOLAB_NOTIFY_ALLOW_NETS must allow it")
    return Target(url=url, parts=parts, host=host, port=port, address=str(addresses[0]))


def mask(url: str) -> str:
    """What the API shows of a webhook URL: the scheme and host, and the last 4 characters of the rest."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "…"
    rest = parts.path + (f"?{parts.query}" if parts.query else "")
    tail = rest[-4:] if len(rest) > 12 else ""
    return f"{parts.scheme}://{parts.netloc}/…{tail}"
