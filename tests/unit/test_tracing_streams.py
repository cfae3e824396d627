"""With traces exported, a server-streaming method written with ``context.write`` (the gateway's
GenerateStream) still streams: OpenTelemetry's aio server interceptor iterates a streaming handler
as an async generator and failed every GenerateStream call with a TypeError when Jaeger ran.

Real gRPC over a socket, in a child process, since the instrumentation patches ``grpc.aio`` for
the whole process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import asyncio, os
    import grpc
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens: spans are dropped
    from llmops_config.telemetry import configure_tracing
    assert configure_tracing("test")

    async def generate_stream(request, context):
        for part in (b"a", b"b", b"c"):
            await context.write(part)

    async def unary(request, context):
        return b"ok"

    identity = lambda value: value
    handler = grpc.method_handlers_generic_handler("llmops.inference.v1.InferenceService", {
        "GenerateStream": grpc.unary_stream_rpc_method_handler(generate_stream, identity, identity),
        "Predict": grpc.unary_unary_rpc_method_handler(unary, identity, identity),
    })

    async def main():
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = channel.unary_stream("/llmops.inference.v1.InferenceService/GenerateStream")
            parts = [part async for part in stream(b"", timeout=10)]
            answer = await channel.unary_unary("/llmops.inference.v1.InferenceService/Predict")(b"", timeout=10)
        await server.stop(None)
        print(b"".join(parts).decode(), answer.decode())

    asyncio.run(main())
    """
)


def test_a_write_streamed_method_streams_while_traces_are_exported() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["abc", "ok"]
