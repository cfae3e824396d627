"""Issue 17, item 8, on the real broker: a forged approved evaluation for model ``../../victim``
(the issue's attack, produced past pydantic as an outside client with write access would) is
dead-lettered with a readable reason by a deployment service told to manage exactly that model,
and the folder ``var/victim__v1`` it used to delete is still there.

(The audit trail itself, promotions to a rollback after compaction, runs on the deployment
service's own harness: ``test_deployment_service.py``.)"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from deployment_bus import read_to_end

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_deployment.main import DeploymentRuntime
from llmops_deployment.settings import DeploymentSettings
from llmops_events import Envelope, encode
from llmops_events.topics import EVALUATIONS, RECORDS_DLQ
from llmops_events.v1 import Decision, EvaluationCompleted
from llmops_messaging import create_broker
from llmops_messaging import headers as h

pytestmark = pytest.mark.integration

VICTIM = "../../victim"


async def test_a_forged_approval_naming_a_path_outside_the_repository_is_dead_lettered(
    kafka_settings: PlatformSettings,
) -> None:
    platform = kafka_settings
    # The folder the forged event deleted: <var>/victim__v1, beside <var>/triton/models.
    victim = platform.model_repository / ".." / ".." / "victim__v1"
    victim.mkdir(parents=True, exist_ok=True)
    (victim / "precious.txt").write_text("keep me")

    genuine = Envelope.wrap(
        EvaluationCompleted(
            model_name="placeholder", model_version=1, candidate_artifact_uri="file:///x", decision=Decision.APPROVED
        ),
        source="/forger",
    )
    record = encode(genuine)
    data = json.loads(record.value)
    data["model_name"] = VICTIM
    producer = AIOKafkaProducer(**kafka_client_options(platform, service="test").aiokafka(acks="all"))
    await producer.start()
    try:
        await producer.send_and_wait(EVALUATIONS, json.dumps(data).encode(), key=b"x", headers=list(record.headers))
    finally:
        await producer.stop()

    # A deployment service that manages exactly that model: were the event decoded, it would act on it.
    settings = DeploymentSettings(
        platform=platform, group_id=f"deployment-forged-{uuid.uuid4().hex[:8]}", model_names=[VICTIM], metrics_port=0
    )
    runtime = DeploymentRuntime(settings)
    broker = create_broker(platform, service="deployment")
    await runtime.open()
    runtime.attach(broker)
    await broker.start()
    try:
        dead: list[Any] = []
        async with asyncio.timeout(120):
            while not dead:
                messages = await read_to_end(platform, RECORDS_DLQ)
                dead = [m for m, _ in messages if dict(m.headers or ()).get("ce_id") == genuine.id.encode()]
                await asyncio.sleep(0.5)
        assert runtime.service is not None
        assert VICTIM not in [m.model_name for m in runtime.service.models()]
    finally:
        await broker.stop()
        await runtime.close()
    errors = {name: value.decode() for name, value in dead[0].headers or () if name.startswith("error.")}
    assert errors[h.ERROR_REASON] == "schema_violation", errors
    assert f"model_name: '{VICTIM}' is not a safe name" in errors[h.ERROR_DETAIL], errors
    assert errors[h.ERROR_TOPIC] == EVALUATIONS
    assert (victim / "precious.txt").read_text() == "keep me", "nothing outside the model repository is touched"
    repository = platform.model_repository
    assert not repository.exists() or not any("victim" in p.name for p in repository.iterdir())
