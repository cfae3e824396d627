"""Calling gRPC servers from hypothesis tests (which are synchronous): an event loop in a thread of
its own runs the server and the client channel, so the server keeps running between examples, and
every call reports ``(code, details)`` instead of raising."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running in a daemon thread until ``close``."""

    def __init__(self, name: str = "fuzz-grpc") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


async def status_of(call: Callable[[], Awaitable[Any]]) -> tuple[grpc.StatusCode, str, Any]:
    """(code, details, response) of the call ``call()`` makes (made here, in the loop's thread, as
    grpc.aio requires): OK with the response, or the code and message of the refusal."""
    try:
        response = await call()
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or "", None
    return grpc.StatusCode.OK, "", response


async def serving(channel: grpc.aio.Channel, service: str = "") -> bool:
    """True when the server's health service answers SERVING for ``service``."""
    answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def metadata(**values: str | None) -> tuple[tuple[str, str], ...]:
    """gRPC metadata from keyword arguments (None: left out; ``_`` in a name becomes ``-``)."""
    return tuple((name.replace("_", "-"), value) for name, value in values.items() if value is not None)
