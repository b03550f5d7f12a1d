"""Where a webhook may be sent: an http(s) URL of bounded length whose host resolves only to
public addresses, and which is not this server itself (server-side request forgery,
docs/security.md#webhooks-and-server-side-request-forgery).

A URL is checked when a request names it and again before each attempt, because what a host
name resolves to can change in between (DNS rebinding); the attempt then connects to an address
that was checked, never to a fresh resolution.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass

MAX_URL_CHARS = 2048
SCHEMES = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses it resolves to (socket.getaddrinfo by default; tests pass their own).
Resolver = Callable[[str, int], list[IPAddress]]
# (address, port) pairs this server answers on.
Endpoints = frozenset[tuple[IPAddress, int]]

# In the order they are named: a loopback or reserved address is private too, and its own name says more.
_ADDRESS_CLASSES = (
    ("is_loopback", "loopback"),
    ("is_unspecified", "unspecified"),
    ("is_link_local", "link-local"),
    ("is_multicast", "multicast"),
    ("is_reserved", "reserved"),
    ("is_private", "private"),
)


class RefusedTarget(ValueError):
    """A URL no webhook may be sent to; the message completes "<field> ..." for the client."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the addresses it was checked at."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]

    def pinned_url(self) -> str:
        """The URL with its host replaced by the first checked address (the Host header and,
        for https, the TLS server name keep the original host)."""
        parts = urllib.parse.urlsplit(self.url)
        address = self.addresses[0]
        host = f"[{address}]" if address.version == 6 else str(address)
        return urllib.parse.urlunsplit((parts.scheme, f"{host}:{self.port}", parts.path or "/", parts.query, ""))

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if SCHEMES[self.scheme] == self.port else f"{host}:{self.port}"


def system_resolver(host: str, port: int) -> list[IPAddress]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # Drop an IPv6 zone ("fe80::1%eth0"): the address class is what matters.
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos))


def address_class(address: IPAddress) -> str | None:
    """Why a webhook may not go to `address` ("loopback", "private", ...); None for a public one."""
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    for attribute, name in _ADDRESS_CLASSES:
        if getattr(address, attribute):
            return name
    if not address.is_global:  # e.g. 100.64.0.0/10, shared by carriers
        return "non-public"
    return None


def split_url(url: object) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable URL, or RefusedTarget saying what is wrong."""
    if not isinstance(url, str):
        raise RefusedTarget("must be an http:// or https:// URL (a string)")
    if len(url) > MAX_URL_CHARS:
        raise RefusedTarget(f"must be at most {MAX_URL_CHARS} characters (got {len(url)})")
    if any(ord(char) <= 32 or ord(char) == 127 for char in url):
        raise RefusedTarget("must not contain spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise RefusedTarget("must be a valid http:// or https:// URL") from None
    if scheme not in SCHEMES:
        raise RefusedTarget("must be an http:// or https:// URL")
    if not host:
        raise RefusedTarget("must name a host")
    if parts.username is not None or parts.password is not None:
        raise RefusedTarget("must not carry a user name or password (the signature proves who sends)")
    return scheme, host, port if port is not None else SCHEMES[scheme]


def check_target(
    url: object,
    *,
    allow_private: bool,
    own: Iterable[tuple[IPAddress, int]] = (),
    resolve: Resolver = system_resolver,
) -> Target:
    """The checked target of `url`; RefusedTarget when the URL is malformed, its host does not
    resolve, or any address it resolves to is not public (unless `allow_private`) or is one
    this server answers on (`own`, refused whatever `allow_private` says)."""
    scheme, host, port = split_url(url)
    try:
        addresses = resolve(host.rstrip("."), port)
    except (OSError, UnicodeError, ValueError):
        raise RefusedTarget(f"names a host that does not resolve ({host})") from None
    if not addresses:
        raise RefusedTarget(f"names a host that does not resolve ({host})")
    own = frozenset(own)
    for address in addresses:
        if (address, port) in own:
            raise RefusedTarget("points at this server itself")
        problem = address_class(address)
        if problem is not None and not allow_private:
            raise RefusedTarget(
                f"points at a {problem} address ({address}); webhooks go to public addresses only"
            )
    return Target(url=url, scheme=scheme, host=host, port=port, addresses=tuple(addresses))


def own_endpoints(hosts: Iterable[tuple[str | None, int | None]], resolve: Resolver = system_resolver) -> Endpoints:
    """The (address, port) pairs of the server's own names: each host resolved (names that do
    not resolve are skipped); a wildcard bind (0.0.0.0, ::) stands for this machine's loopback
    and its host name's addresses."""
    found: set[tuple[IPAddress, int]] = set()
    for host, port in hosts:
        if not host or not port:
            continue
        names = [host]
        if host in ("0.0.0.0", "::", ""):
            names = ["127.0.0.1", "::1", "localhost", socket.gethostname()]
        for name in names:
            try:
                found.update((address, port) for address in resolve(name, port))
            except (OSError, UnicodeError, ValueError):
                continue
    return frozenset(found)
