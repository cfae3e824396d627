"""The Triton pool's rules, apart from the servers (the real two-server run is
``tests/integration/test_triton_pool.py``): where members come from, the gateway's target, and how
the deployment service's calls fan out. The members here are fakes, named so."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from llmops_config import PlatformSettings
from llmops_deployment.adapters.triton import Counts
from llmops_deployment.adapters.triton_pool import TritonPool
from llmops_deployment.errors import TritonUnavailable
from llmops_serving.triton_pool import ROUND_ROBIN, TritonEndpoint, gateway_target, pool_endpoints


def test_one_server_by_default() -> None:
    settings = PlatformSettings(triton_host="triton", triton_grpc_port=8001)
    assert gateway_target(settings) == ("triton:8001", ())
    assert pool_endpoints(settings) == [TritonEndpoint("triton", 8001, 8002)]


def test_a_list_of_hosts_is_one_round_robin_target_of_their_addresses() -> None:
    settings = PlatformSettings(triton_pool_hosts="127.0.0.2, 127.0.0.1", triton_grpc_port=9001)
    assert gateway_target(settings) == ("ipv4:127.0.0.1:9001,127.0.0.2:9001", ROUND_ROBIN)
    assert [e.host for e in pool_endpoints(settings)] == ["127.0.0.2", "127.0.0.1"]
    with pytest.raises(ValueError, match="no Triton pool host resolves"):
        gateway_target(PlatformSettings(triton_pool_hosts="no-such-host.invalid"))


def test_a_dns_pool_is_every_address_of_the_name() -> None:
    settings = PlatformSettings(triton_host="localhost", triton_pool_dns=True, triton_grpc_port=8001)
    assert gateway_target(settings) == ("ipv4:127.0.0.1:8001", ROUND_ROBIN)  # IPv4 when both families
    hosts = {e.host for e in pool_endpoints(settings)}
    assert "127.0.0.1" in hosts
    nowhere = PlatformSettings(triton_host="no-such-host.invalid", triton_pool_dns=True, triton_grpc_port=8001)
    assert pool_endpoints(nowhere) == []
    # No member resolves yet (no ready pod): gRPC's own resolver keeps trying the name.
    assert gateway_target(nowhere) == ("dns:///no-such-host.invalid:8001", ROUND_ROBIN)


def test_ipv6_members_are_bracketed() -> None:
    endpoint = TritonEndpoint("fd00::7", 8001, 8002)
    assert (endpoint.grpc_url, endpoint.metrics_url) == ("[fd00::7]:8001", "http://[fd00::7]:8002/metrics")


@dataclass
class FakeMember:
    """Stands in for one Triton's ``TritonControl`` (only the calls the pool makes)."""

    live: bool = True
    ready: set[str] = field(default_factory=set)
    loads: list[str] = field(default_factory=list)
    served: int = 0
    closed: bool = False

    async def is_live(self, timeout_s: float = 5.0) -> bool:
        return self.live

    async def is_ready(self, name: str) -> bool:
        if not self.live:
            raise ConnectionError("unreachable")
        return name in self.ready

    async def load(self, name: str) -> None:
        if not self.live:
            raise ConnectionError("unreachable")
        self.loads.append(name)
        self.ready.add(name)

    async def ready_models(self) -> set[str]:
        return set(self.ready)

    async def counts(self, name: str) -> Counts | None:
        return Counts(requests=self.served, failure=1, success_ns=10) if name in self.ready else None

    async def close(self) -> None:
        self.closed = True


def _pool(members: dict[str, FakeMember], found: list[str]) -> TritonPool:
    endpoints = {host: TritonEndpoint(host, 8001, 8002) for host in members}
    return TritonPool(
        lambda: [endpoints[h] for h in found],
        refresh_s=0.0,
        connect=lambda e: members[e.host],  # type: ignore[arg-type,return-value]
    )


def test_a_version_loads_where_it_is_missing_and_counts_add_up() -> None:
    a, b = FakeMember(ready={"m_1"}, served=5), FakeMember()
    pool = _pool({"a": a, "b": b}, ["a", "b"])

    async def scenario() -> None:
        assert await pool.ready_models() == set()  # ready on every member, or not ready
        await pool.load("m_1")
        assert (a.loads, b.loads) == ([], ["m_1"])  # the member that had it is not reloaded
        assert await pool.is_ready("m_1")
        await pool.load("m_1")  # ready everywhere: an explicit load reloads on each, as on one server
        assert (a.loads, b.loads) == (["m_1"], ["m_1", "m_1"])
        assert await pool.counts("m_1") == Counts(requests=5, failure=2, success_ns=20)

    asyncio.run(scenario())


def test_an_unreachable_member_is_left_out_while_another_answers() -> None:
    a, b = FakeMember(), FakeMember(live=False)
    pool = _pool({"a": a, "b": b}, ["a", "b"])

    async def scenario() -> None:
        assert await pool.is_live()
        await pool.load("m_1")
        assert (a.loads, b.loads) == (["m_1"], [])
        a.live = False
        assert not await pool.is_live()
        with pytest.raises(ConnectionError):  # none answers: the first member's own error
            await pool.load("m_2")

    asyncio.run(scenario())


def test_members_come_and_go_with_the_lookup() -> None:
    a, b = FakeMember(), FakeMember()
    found = ["a"]
    pool = _pool({"a": a, "b": b}, found)

    async def scenario() -> None:
        await pool.refresh(force=True)
        assert [e.host for e in pool.endpoints] == ["a"]
        found.append("b")
        await pool.refresh(force=True)
        assert [e.host for e in pool.endpoints] == ["a", "b"]
        found.remove("a")
        await pool.refresh(force=True)
        assert [e.host for e in pool.endpoints] == ["b"] and a.closed
        found.clear()  # a lookup that finds nothing keeps what is known
        await pool.refresh(force=True)
        assert [e.host for e in pool.endpoints] == ["b"]

    asyncio.run(scenario())


def test_a_pool_with_no_member_is_unavailable() -> None:
    pool = _pool({}, [])

    async def scenario() -> None:
        assert not await pool.is_live()
        with pytest.raises(TritonUnavailable, match="no member"):
            await pool.ready_models()

    asyncio.run(scenario())
