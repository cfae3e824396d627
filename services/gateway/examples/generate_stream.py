"""Stream a generation from the gateway and print the text as it arrives (the README's example).

    .venv/bin/python services/gateway/examples/generate_stream.py --model support-bot "My card has not arrived"

Stubs: ``gen/python`` (``make setup``), or generate your own from ``proto/llmops/inference/v1``.
"""

from __future__ import annotations

import argparse
import os

import grpc

from llmops.inference.v1 import inference_pb2, inference_pb2_grpc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("--model", default="", help="a causal_lm model; empty: the gateway's default")
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--key", default=os.environ.get("LLMOPS_API_KEY", ""), help="default: $LLMOPS_API_KEY")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--cacert", default="var/tls/ca.crt", help="the CA the gateway's certificate is signed by")
    parser.add_argument("--plaintext", action="store_true", help="for a gateway run with LLMOPS_TLS_INSECURE=true")
    args = parser.parse_args()

    if args.plaintext:
        channel = grpc.insecure_channel(args.address)
    else:
        with open(args.cacert, "rb") as ca:
            channel = grpc.secure_channel(args.address, grpc.ssl_channel_credentials(root_certificates=ca.read()))
    with channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        request = inference_pb2.GenerateStreamRequest(
            model=args.model,
            messages=[inference_pb2.ChatMessage(role="user", content=args.prompt)],
            max_tokens=args.max_tokens,
        )
        for chunk in stub.GenerateStream(request, metadata=[("authorization", f"Bearer {args.key}")], timeout=120):
            print(chunk.text, end="", flush=True)
            if chunk.finish_reason:
                usage = chunk.usage
                print(
                    f"\n[{chunk.model_name} v{chunk.model_version}: {chunk.finish_reason},"
                    f" {usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens]"
                )


if __name__ == "__main__":
    main()
