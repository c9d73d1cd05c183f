"""Which addresses Tessera may connect to when a URL comes from an admin or a tenant file."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from authz.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud instance-metadata endpoints. Most sit in ranges refused anyway (link-local, unique-local,
#: shared address space); Azure's wire server and Oracle's are otherwise ordinary-looking addresses.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure IMDS, OpenStack, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server
        "192.0.0.192",  # Oracle Cloud
    )
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_v4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped ``::ffff:a.b.c.d`` or NAT64), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _range_of(address: IPAddress) -> str | None:
    """Why ``address`` is not a public internet address, or None when it is one."""
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv6Address) and address in ipaddress.ip_network("fc00::/7"):
        return "unique-local"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "reserved"
    return None


@dataclass(frozen=True, slots=True)
class AllowEntry:
    """One operator allowlist entry: a network, optionally limited to one port."""

    network: IPNetwork
    port: int | None = None

    def matches(self, address: IPAddress, port: int) -> bool:
        return (
            address.version == self.network.version
            and address in self.network
            and (self.port is None or self.port == port)
        )

    def __str__(self) -> str:
        if self.port is None:
            return str(self.network)
        host = str(self.network.network_address) if self.network.num_addresses == 1 else str(self.network)
        return f"[{host}]:{self.port}" if self.network.version == 6 else f"{host}:{self.port}"


def parse_allow_entry(text: str) -> AllowEntry:
    """``10.0.0.0/8``, ``127.0.0.1``, ``127.0.0.1:9000``, ``::1``, ``[::1]:9000``, ``[fd00::/8]:443``."""
    raw = text.strip()
    port: int | None = None
    try:
        if raw.startswith("["):
            host, _, rest = raw[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(raw)
                port = int(rest[1:])
        elif raw.count(":") == 1:
            host, _, port_text = raw.partition(":")
            port = int(port_text)
        else:
            host = raw
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        raise ConfigError(
            f"outbound allowlist entry {text!r} is not an address or CIDR network with an optional port"
        ) from None
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"outbound allowlist entry {text!r} has an invalid port")
    return AllowEntry(network, port)


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """The rules every outbound connection to an admin- or tenant-chosen URL passes.

    Refused unless the operator allowlist (process configuration, ``TESSERA_OUTBOUND_ALLOW``; never the
    tenant API) says otherwise:

    * loopback, link-local, private (RFC 1918), unique-local (fc00::/7), shared (100.64/10), multicast,
      unspecified and other non-global addresses, also when hidden in an IPv4-mapped or NAT64 address;
      a network entry such as ``127.0.0.0/8`` allows them;
    * cloud metadata addresses (:data:`METADATA_ADDRESSES`): only an entry naming the exact address
      (``169.254.169.254/32``) allows one, a wider network does not;
    * the service's own ports (check, admin, metrics, Envoy's listener and admin; ``refused_ports``) on
      any non-public address: only an entry naming the port (``127.0.0.1:9901``) allows one. So a demo
      allowlist of ``127.0.0.0/8`` still keeps webhooks off Envoy's admin endpoint.
    """

    allow: tuple[AllowEntry, ...] = ()
    refused_ports: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def build(cls, allow: Iterable[str] = (), refused_ports: Iterable[int] = ()) -> OutboundPolicy:
        return cls(tuple(parse_allow_entry(e) for e in allow if e.strip()), frozenset(refused_ports))

    def refusal(self, address: str | IPAddress, port: int) -> str | None:
        """Why connecting to ``address``:``port`` is refused, or None when it is allowed."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        ip = _embedded_v4(ip)
        explicit_port = any(e.port == port and e.matches(ip, port) for e in self.allow)
        if ip in METADATA_ADDRESSES:
            exact = any(e.network.num_addresses == 1 and e.matches(ip, port) for e in self.allow)
            return None if exact else f"{ip} is a cloud metadata address"
        kind = _range_of(ip)
        if kind is None:
            return None
        if not any(e.matches(ip, port) for e in self.allow):
            return f"{ip} is a {kind} address (not in TESSERA_OUTBOUND_ALLOW)"
        if port in self.refused_ports and not explicit_port:
            return f"port {port} on {ip} is one of Tessera's own ports"
        return None
