"""The Go and Java gRPC clients of ``examples/``, built from ``contracts/proto`` and run against a
real gateway (in-process, over a socket) in front of the real tritonserver: ``Predict`` on a
classifier and ``GenerateStream`` on the causal-LM base, with an API key, over TLS with the
stack's CA (or plaintext when the stack runs without TLS), and a refused call without the key."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient

from llmops_config import PlatformSettings
from llmops_config.tls import tls_files
from llmops_events.v1 import DeploymentPromoted
from llmops_gateway.main import GatewayRuntime
from llmops_gateway.settings import GatewaySettings
from llmops_messaging import EventPublisher
from llmops_models.kinds import ServingOptions
from llmops_models.kinds.causal_lm import CAUSAL_LM
from llmops_models.triton_repository import ModelRepository
from llmops_privacy import Redactor
from llmops_storage import ArtifactStore

from .toolchains import BUILD, JAVA_CLASSPATH, RUN_TIMEOUT_S, build, run

pytestmark = pytest.mark.integration

KEY = f"examples-key-{uuid.uuid4().hex}"
SUFFIX = uuid.uuid4().hex[:8]
CLASSIFIER = f"examples-intents-{SUFFIX}"
TRITON_CAUSAL_LM = f"examples_causal_lm_{SUFFIX}"
ALIAS = "smollm2-base"  # the base model itself, version 0: no adapter to train for this test
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def served(
    triton_settings: PlatformSettings, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PlatformSettings]:
    """The tiny classifier as version 1 of ``CLASSIFIER`` and the causal-LM base, loaded on Triton."""
    repository = ModelRepository(triton_settings.model_repository)
    client = grpcclient.InferenceServerClient(triton_settings.triton_grpc_url)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "model"
        store = ArtifactStore(triton_settings.resolved_artifact_store_uri)
        store.download_folder(f"models/{tiny_model.model_name}/{tiny_model.model_version}", folder)
        classifier = repository.write(CLASSIFIER, 1, folder, ServingOptions(max_queue_delay_us=500))
    causal_lm = CAUSAL_LM.base_triton_model(
        ServingOptions(torch_threads=2),
        adapters_dir=tmp_path_factory.mktemp("adapters"),
        name=TRITON_CAUSAL_LM,
        max_running=2,
        max_queued=2,
        max_new_tokens=32,
        max_prompt_tokens=128,
    )
    repository.write_model(TRITON_CAUSAL_LM, causal_lm)
    names = [classifier, TRITON_CAUSAL_LM]
    for name in names:
        client.load_model(name)
    try:
        yield triton_settings
    finally:
        for name in names:
            client.unload_model(name)


@pytest.fixture(scope="module")
async def gateway(
    served: PlatformSettings, kafka_settings: PlatformSettings, redactor: Redactor
) -> AsyncIterator[GatewayRuntime]:
    async with EventPublisher(kafka_settings, service="examples-test") as publisher:
        await publisher.publish(DeploymentPromoted(model_name=CLASSIFIER, model_version=1))
    settings = GatewaySettings(
        platform=served,
        api_keys=[KEY],
        default_model=CLASSIFIER,
        causal_lm_model=TRITON_CAUSAL_LM,
        base_model_alias=ALIAS,
        generate_max_tokens=32,
        generate_default_max_tokens=MAX_TOKENS,
        metrics_port=0,
        host="127.0.0.1",
    )
    async with GatewayRuntime(settings, redactor=redactor, port=0) as runtime:
        yield runtime


def _client(language: str) -> list[str]:
    if language == "java":
        return ["java", "-cp", JAVA_CLASSPATH, "dev.llmops.examples.PredictClient"]
    return [str(BUILD / "go" / "bin" / "grpc-client")]


def _connection(gateway: GatewayRuntime) -> list[str]:
    """Address and transport security, as a client of this stack would be told to connect."""
    platform = gateway.settings.platform
    security = ["--plaintext"] if platform.tls.insecure else ["--ca-cert", str(tls_files(platform).ca)]
    return ["--address", f"127.0.0.1:{gateway.port}", *security, "--timeout", str(RUN_TIMEOUT_S - 30)]


@pytest.mark.parametrize("language", ["go", "java"])
async def test_the_client_predicts_and_streams_a_generation_with_an_api_key(
    language: str, gateway: GatewayRuntime
) -> None:
    build(language)
    arguments = [*_connection(gateway), "--key", KEY]
    arguments += ["--text", "i lost my card", "--prompt", "Count from 1 to 10.", "--max-tokens", str(MAX_TOKENS)]
    # In a thread: the gateway answers on this test's event loop, which must keep running.
    out = await asyncio.to_thread(run, [*_client(language), *arguments])

    prediction, *generation = out.splitlines()
    answer = json.loads(prediction)
    assert (answer["model"], answer["version"]) == (CLASSIFIER, 1) and answer["request_id"]
    assert answer["label"] in {"card_arrival", "exchange_rate", "lost_card"} and 0 < answer["confidence"] <= 1
    summary = generation[-1]
    assert summary.startswith(f"[{ALIAS} v0: ") and summary.endswith("completion tokens]")
    assert any(reason in summary for reason in (": stop,", ": length,")) and " 0 completion tokens" not in summary


@pytest.mark.parametrize("language", ["go", "java"])
async def test_the_client_reports_a_refused_key(language: str, gateway: GatewayRuntime) -> None:
    build(language)
    arguments = [*_connection(gateway), "--key", "not-a-key", "--text", "i lost my card"]
    command = [*_client(language), *arguments]
    result = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    assert result.returncode == 1 and "UNAUTHENTICATED" in result.stderr.upper(), result.stderr
