"""Where the Tritons are: one server (the default), a fixed list of hosts, or every address a DNS
name resolves to (a Kubernetes headless Service), all serving one model repository on the same ports.

The deployment service drives each member (``TritonPool`` there); the gateway opens one gRPC channel
over all of them with client-side round robin (``gateway_target``)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from llmops_config import PlatformSettings

ROUND_ROBIN = (("grpc.lb_policy_name", "round_robin"),)
"""Channel option: spread calls over every address of the target instead of gRPC's default
``pick_first`` (which sends everything to the first address that connects)."""


@dataclass(frozen=True, slots=True)
class TritonEndpoint:
    """One member of the pool."""

    host: str
    grpc_port: int
    metrics_port: int

    @property
    def _address(self) -> str:
        return f"[{self.host}]" if _is_ipv6(self.host) else self.host

    @property
    def grpc_url(self) -> str:
        return f"{self._address}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._address}:{self.metrics_port}/metrics"


def pool_endpoints(settings: PlatformSettings) -> list[TritonEndpoint]:
    """The members now, in a stable order (blocking: a DNS lookup when ``triton_pool_dns``). An
    empty list when the name resolves to nothing (no ready pod yet)."""
    if settings.triton_pool_dns:
        hosts = resolve(settings.triton_host, settings.triton_grpc_port)
    else:
        hosts = _pool_hosts(settings) or [settings.triton_host]
    return [TritonEndpoint(host, settings.triton_grpc_port, settings.triton_metrics_port) for host in hosts]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, sorted; none when it does not resolve."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return sorted({str(info[4][0]) for info in found})


def gateway_target(settings: PlatformSettings) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The gRPC target and channel options for a client of the pool (blocking: DNS lookups).

    One server: its address, as before. A pool: the members' addresses in gRPC's ``ipv4:``/``ipv6:``
    form with round robin, looked up now: a DNS pool's client calls this again every
    ``triton_pool_refresh_s`` and moves to the new target when the members changed (gRPC's own
    ``dns:///`` resolver looks a name up again only when a connection breaks, so it would never
    see a replica added). A DNS name that resolves to nothing yet is left to gRPC's resolver."""
    port = settings.triton_grpc_port
    if settings.triton_pool_dns:
        addresses = resolve(settings.triton_host, port)
        if not addresses:
            return f"dns:///{settings.triton_host}:{port}", ROUND_ROBIN
    else:
        hosts = _pool_hosts(settings)
        if not hosts:
            return settings.triton_grpc_url, ()
        addresses = sorted({address for host in hosts for address in resolve(host, port)})
        if not addresses:
            raise ValueError(f"no Triton pool host resolves: {', '.join(hosts)}")
    v4 = [a for a in addresses if not _is_ipv6(a)]
    if v4:  # gRPC takes one family per target; IPv4 when the names give both (localhost does)
        return "ipv4:" + ",".join(f"{a}:{port}" for a in v4), ROUND_ROBIN
    return "ipv6:" + ",".join(f"[{a}]:{port}" for a in addresses), ROUND_ROBIN


def _pool_hosts(settings: PlatformSettings) -> list[str]:
    return [host.strip() for host in settings.triton_pool_hosts.split(",") if host.strip()]


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False
