"""Names that become paths (issue 17, item 8): one pattern checked at the event boundary, and every
folder that joins a name into a path refusing one that resolves outside its root.

The same names as the kernel's own check (``llmops_models.layout.check_name``) are accepted and
refused by the event type, so the two spellings of the rule cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from llmops_events import ContentMode, DeadLetterReason, DecodeError, Envelope, KafkaRecord, decode, encode
from llmops_events.names import NAME_MAX_LENGTH, DatasetId, ModelName, is_safe_name
from llmops_events.topics import AUDIT, TOPICS_BY_NAME, platform_topics
from llmops_events.v1 import AuditAction, AuditRecorded, Decision, EvaluationCompleted, publish_audit
from llmops_models import is_valid_name
from llmops_models.triton_repository import AdapterRepository, ModelRepository
from llmops_storage import ArtifactStore, PathOutsideRoot, inside

SAFE = ["banking77", "tiny-intents", "a.b_c-1", "x" * NAME_MAX_LENGTH, "banking-20261128T101500Z-3f9a1c", "a."]
UNSAFE = ["../victim", "../../victim", "..", ".", ".hidden", "a/b", "a\\b", "", "x" * 129, "a..b", "é", " a", "-a"]


class _Named(BaseModel):
    model: ModelName
    dataset: DatasetId | None = None


@pytest.mark.parametrize("name", SAFE)
def test_a_safe_name_is_accepted_by_the_event_type_and_the_kernel(name: str) -> None:
    assert _Named(model=name, dataset=name).model == name
    assert is_safe_name(name) and is_valid_name(name)


@pytest.mark.parametrize("name", UNSAFE)
def test_an_unsafe_name_is_refused_by_the_event_type_and_the_kernel(name: str) -> None:
    with pytest.raises(ValidationError) as raised:
        _Named(model=name)
    assert raised.value.errors()[0]["type"] in {"unsafe_name", "string_too_short"}
    assert not is_safe_name(name) and not is_valid_name(name)


def test_the_published_schema_states_the_rule() -> None:
    schema = _Named.model_json_schema()["properties"]["model"]
    assert schema["maxLength"] == NAME_MAX_LENGTH and schema["pattern"].startswith("^[A-Za-z0-9]")


def _forged_approval(model_name: str, mode: ContentMode) -> KafkaRecord:
    """The issue's forged approved evaluation, written past pydantic (as an outside producer would)."""
    genuine = EvaluationCompleted(
        model_name="placeholder",
        model_version=1,
        candidate_artifact_uri="file:///x",
        decision=Decision.APPROVED,
    )
    record = encode(Envelope.wrap(genuine, source="/forger"), mode)
    if mode is ContentMode.BINARY:
        data = json.loads(record.value)
        data["model_name"] = model_name
        return KafkaRecord(record.key, json.dumps(data).encode(), record.headers)
    document = json.loads(record.value)
    document["data"]["model_name"] = model_name
    return KafkaRecord(record.key, json.dumps(document).encode(), record.headers)


@pytest.mark.parametrize("mode", list(ContentMode))
def test_a_forged_event_with_a_climbing_model_name_fails_decoding_with_a_readable_reason(mode: ContentMode) -> None:
    with pytest.raises(DecodeError) as raised:
        decode(_forged_approval("../../victim", mode), EvaluationCompleted)
    assert raised.value.reason == DeadLetterReason.SCHEMA_VIOLATION
    assert "model_name: '../../victim' is not a safe name" in raised.value.detail


def test_the_audit_topic_is_never_compacted_and_kept_as_long_as_the_setting_says() -> None:
    spec = TOPICS_BY_NAME[AUDIT]
    assert spec.config["cleanup.policy"] == "delete"
    assert spec.config["retention.ms"] == "-1"
    ten_years = 10 * 365 * 24 * 3600 * 1000
    (configured,) = [s for s in platform_topics(audit_retention_ms=ten_years) if s.name == AUDIT]
    assert configured.config == {"cleanup.policy": "delete", "retention.ms": str(ten_years)}


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[Envelope[AuditRecorded]] = []

    async def publish(
        self, data: AuditRecorded, *, correlationid: str | None = None, id: str | None = None
    ) -> Envelope[AuditRecorded]:
        envelope = Envelope.wrap(data, source="/test", correlationid=correlationid, id=id)
        self.sent.append(envelope)
        return envelope


async def test_publish_audit_validates_and_round_trips() -> None:
    recorder = _Recorder()
    sent = await publish_audit(
        recorder, "promotion", "service:deployment", model="m", version=2, details={"previous_version": "1"}
    )
    assert sent.topic == AUDIT and sent.key == "m"
    back = decode(encode(sent), AuditRecorded)
    assert back.data.action is AuditAction.PROMOTION and back.data.details == {"previous_version": "1"}
    with pytest.raises(ValidationError):
        await publish_audit(recorder, "promotion", "alice")  # not a <kind>:<name> principal
    with pytest.raises(ValueError):
        await publish_audit(recorder, "made_up", "service:deployment")
    assert len(recorder.sent) == 1


# ---- the folders ------------------------------------------------------------------------------


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    """``var/victim__v1`` of the issue: a folder beside the model repository that must survive."""
    folder = tmp_path / "var" / "victim__v1"
    folder.mkdir(parents=True)
    (folder / "precious.txt").write_text("keep me")
    return folder


def test_the_model_repository_refuses_a_name_that_climbs_out(tmp_path: Path, sentinel: Path) -> None:
    repository = ModelRepository(tmp_path / "var" / "triton" / "models")
    with pytest.raises(PathOutsideRoot, match="outside"):
        repository.remove("../../victim__v1")
    with pytest.raises(PathOutsideRoot):
        repository.path("../../victim", 1)
    assert (sentinel / "precious.txt").read_text() == "keep me"


def test_the_adapter_repository_refuses_a_name_that_climbs_out(tmp_path: Path, sentinel: Path) -> None:
    adapters = AdapterRepository(tmp_path / "var" / "adapters")
    with pytest.raises(PathOutsideRoot):
        adapters.remove("../victim__v1")
    with pytest.raises(PathOutsideRoot):
        adapters.write("../victim__v1", tmp_path)
    assert sentinel.is_dir()


@pytest.mark.parametrize("path", ["../outside.json", "models/../../outside.json", "/etc/passwd", "a/../../x"])
def test_the_artifact_store_refuses_paths_outside_its_root(tmp_path: Path, path: str) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    with pytest.raises(PathOutsideRoot):
        store.write_bytes(path, b"x")
    with pytest.raises(PathOutsideRoot):
        store.read_bytes(path)
    assert not (tmp_path / "outside.json").exists()


def test_the_artifact_store_refuses_a_symlink_out_of_its_root(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "artifacts" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PathOutsideRoot):
        store.write_bytes("link/x.json", b"x")
    assert not (tmp_path / "elsewhere" / "x.json").exists()
    store.write_json("models/m/1/manifest.json", {"ok": True})  # inside: fine
    assert store.read_json("models/m/1/manifest.json") == {"ok": True}
    assert store.uri(".") == str((tmp_path / "artifacts").resolve())


def test_inside_keeps_a_name_below_its_root(tmp_path: Path) -> None:
    assert inside(tmp_path, "m__v1") == tmp_path / "m__v1"
    for name in ("..", ".", "../x", "/abs", "a/../../x"):
        with pytest.raises(PathOutsideRoot):
            inside(tmp_path, name)
