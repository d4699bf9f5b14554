"""Which URLs Neutrino may send webhooks to (NEUTRINO_WEBHOOK_ALLOWED_HOSTS).

A webhook URL comes from whoever submits a task or edits an alert rule; sent blindly, it would let them
make Neutrino's servers call what only those servers can reach (a metadata service on 169.254.169.254, a
database port on 10.x, an admin page on localhost). So a host is resolved and every address it resolves
to must be allowed:

- `*` in the list: any public address (not loopback, private, link-local, multicast, reserved, ...);
- a host name in the list (`hooks.example.com`, or `.example.com` for it and its subdomains), an address
  (`127.0.0.1`) or a network (`10.1.0.0/16`): allowed even when internal: an admin listed it.

The sender connects to the very address it checked (`Destination.addresses`), so a name that resolves to
a public address when checked and to an internal one a moment later (DNS rebinding) gains nothing.
What it cannot see: a public host that forwards the request inward (an open redirect is not followed,
but a proxy on the receiving side is that host's business).

Imports no Django.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_CHARS = 2000
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]


class UrlRefused(ValueError):
    """The URL may not be called; the message says why. `final`: trying again later cannot help."""

    def __init__(self, message: str, *, final: bool = True) -> None:
        super().__init__(message)
        self.final = final


@dataclass(frozen=True)
class AllowList:
    any_public: bool
    names: frozenset[str]
    suffixes: tuple[str, ...]  # ".example.com"
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Sequence[str]) -> AllowList:
        """From the setting's entries. Raises ValueError naming an entry that is none of the forms."""
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        any_public = False
        for raw in entries:
            entry = raw.strip().lower().strip("[]")
            if not entry:
                continue
            if entry == "*":
                any_public = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            label = entry.lstrip(".")
            if not label or any(c in label for c in "/:*@ "):
                raise ValueError(f"NEUTRINO_WEBHOOK_ALLOWED_HOSTS: {raw!r} is not *, a host name, an address "
                                 "or a network")
            if entry.startswith("."):
                suffixes.append(entry)
            else:
                names.add(entry)
        return cls(any_public=any_public, names=frozenset(names), suffixes=tuple(suffixes), networks=tuple(networks))

    def lists_name(self, host: str) -> bool:
        return host in self.names or any(host.endswith(s) or host == s[1:] for s in self.suffixes)

    def address_problem(self, address: IPAddress) -> str | None:
        """Why `address` may not be called (None: it may)."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.networks):
            return None
        kind = address_kind(address)
        if kind is None and self.any_public:
            return None
        if kind is None:
            return "not in NEUTRINO_WEBHOOK_ALLOWED_HOSTS"
        return f"a {kind} address; list it in NEUTRINO_WEBHOOK_ALLOWED_HOSTS to allow it"


def address_kind(address: IPAddress) -> str | None:
    """What makes `address` internal, or None for a public (global unicast) address."""
    for kind, flag in (("loopback", address.is_loopback), ("link-local", address.is_link_local),
                       ("multicast", address.is_multicast), ("unspecified", address.is_unspecified),
                       ("reserved", address.is_reserved), ("private", address.is_private)):
        if flag:
            return kind
    return None if address.is_global else "non-public"


@dataclass(frozen=True)
class Destination:
    """A checked URL: where to connect (`addresses`, each allowed) and what to ask for."""

    scheme: str
    host: str  # as in the URL, lower case (the Host header and the TLS name)
    port: int
    target: str  # path and query
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def webhook_destination(url: str, allow: AllowList, *, resolve: Resolver = system_resolver) -> Destination:
    """Check `url` against the allow-list and resolve it. Raises UrlRefused saying why it may not be called."""
    if not isinstance(url, str) or not url:
        raise UrlRefused("must be an http:// or https:// URL")
    if len(url) > MAX_URL_CHARS:
        raise UrlRefused(f"is longer than {MAX_URL_CHARS} characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise UrlRefused("contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"is not a valid URL ({exc})")
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlRefused("must be an http:// or https:// URL")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise UrlRefused("has no host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("must not carry a user name or password; the signature authenticates Neutrino")
    port = port or (443 if scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    listed = allow.lists_name(host)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise UrlRefused(f"host {host} does not resolve ({exc})", final=False)
        if not addresses:
            raise UrlRefused(f"host {host} does not resolve", final=False)
    if not listed:
        for address in addresses:
            problem = allow.address_problem(ipaddress.ip_address(address.split("%", 1)[0]))
            if problem is not None:
                shown = host if literal is not None else f"{host} resolves to {address}:"
                raise UrlRefused(f"{shown} is {problem}" if literal is not None else f"{shown} {problem}")
    return Destination(scheme=scheme, host=host, port=port, target=target, addresses=tuple(addresses))
