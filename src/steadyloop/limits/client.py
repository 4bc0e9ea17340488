"""Who is the client: the key a request's rate limits count under.

The client IP comes from `X-Forwarded-For` (or `Forwarded`) only when the connection comes from
a trusted proxy, and then from the right: the first address that is not a trusted proxy.
Anything malformed ends the walk at the last trusted hop; nothing a client writes can choose its
own key.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from starlette.types import Scope

from steadyloop.limits._paths import parse_paths

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(value: str | Iterable[str]) -> list[IPNetwork]:
    """`"10.0.0.0/8, 127.0.0.1"` -> networks; `*` is every address (uvicorn's spelling);
    a bad entry raises ValueError naming it."""
    networks: list[IPNetwork] = []
    for item in parse_paths(value):
        if item == "*":
            networks += [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"TRUSTED_PROXIES: {item!r} is not an IP address or CIDR") from exc
    return networks


def _parse_ip(text: str) -> IPAddress | None:
    """One address from a forwarding header, or None when it is not a plain IP address."""
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6] or [v6]:port
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forwarded_for(values: Sequence[str]) -> list[str]:
    """The `for=` parameters of `Forwarded` headers (RFC 7239), in order; other params skipped."""
    found: list[str] = []
    for value in values:
        for element in value.split(","):
            node = ""
            for pair in element.split(";"):
                name, sep, val = pair.partition("=")
                if sep and name.strip().lower() == "for":
                    node = val.strip()
            found.append(node)  # an element without for= is malformed: "" ends the walk
    return found


ProxyHeader = Literal["x-forwarded-for", "forwarded"]


@dataclass(frozen=True, slots=True)
class ClientIdentityConfig:
    """Who a client is (TRUSTED_PROXIES, TRUSTED_PROXY_HEADER, RATE_LIMIT_KEY_HEADER)."""

    #: Addresses or CIDRs (or `*`) whose forwarding header is believed; empty: none.
    trusted_proxies: tuple[str, ...] = ()
    #: The header those proxies write.
    proxy_header: ProxyHeader = "x-forwarded-for"
    #: A header whose value (an API key) is the client's key; empty: the client IP.
    key_header: str = ""


class ClientIdentity:
    """Turns a request into the client key its rate limits are counted under.

    - With `key_header` set and present: `key:<sha256 of the value>` (the raw API key is
      never stored in memory or Redis).
    - Otherwise the client's IP address: the peer address, or, when the peer is one of the
      `trusted_proxies`, the rightmost address in `proxy_header` that is not a trusted proxy.
      IPv6 clients are grouped by /64 (one host usually controls a whole /64).
    """

    def __init__(
        self,
        *,
        trusted_proxies: Iterable[IPNetwork] = (),
        proxy_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for",
        key_header: str | None = None,
    ) -> None:
        self.trusted = list(trusted_proxies)
        self.proxy_header = proxy_header.lower().encode("latin-1")
        self.key_header = key_header.lower().encode("latin-1") if key_header else None

    @classmethod
    def from_config(cls, config: ClientIdentityConfig) -> ClientIdentity:
        """The identity `config` describes (a bad network raises ValueError naming it)."""
        return cls(
            trusted_proxies=parse_networks(config.trusted_proxies),
            proxy_header=config.proxy_header,
            key_header=config.key_header or None,
        )

    def is_trusted(self, address: IPAddress) -> bool:
        """True if `address` is in one of the trusted proxy networks."""
        return any(address in network for network in self.trusted)

    def client_ip(self, scope: Scope) -> IPAddress | None:
        """The client's address: the peer, or, behind trusted proxies, the nearest untrusted hop of
        the forwarding header.
        """
        client = scope.get("client")
        peer = _parse_ip(str(client[0])) if client else None
        if peer is None or not self.trusted or not self.is_trusted(peer):
            return peer
        values = [
            value.decode("latin-1") for name, value in scope["headers"] if name == self.proxy_header
        ]
        if not values:
            return peer
        if self.proxy_header == b"forwarded":
            hops = _forwarded_for(values)
        else:
            hops = [hop for value in values for hop in value.split(",")]
        current = peer
        for hop in reversed(hops):
            address = _parse_ip(hop)
            if address is None:
                return current  # malformed: the last hop we could trust
            current = address
            if not self.is_trusted(address):
                return address
        return current  # every hop is a trusted proxy: the leftmost is the client

    def key(self, scope: Scope) -> str:
        """The key the request's rate limits count under: the hashed API key, else the client IP."""
        if self.key_header is not None:
            for name, value in scope["headers"]:
                if name == self.key_header and value:
                    return "key:" + hashlib.sha256(value).hexdigest()[:32]
        address = self.client_ip(scope)
        if address is None:
            return "ip:unknown"
        if isinstance(address, ipaddress.IPv6Address):
            return f"ip:{ipaddress.ip_network((address, 64), strict=False)}"
        return f"ip:{address}"
