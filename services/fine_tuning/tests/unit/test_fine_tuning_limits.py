"""Issue 20: every job is bounded. Hyperparameters and the base model are checked against the
policy's ``limits`` when the job is resolved, the dataset's size before training, and the trainer
stops a job that outlives its time limit; each ends as ``training.failed`` (retryable=false) and
the request is acknowledged. The consumer takes one request per poll (one job per commit) with a
poll interval longer than any job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from llmops_events import Envelope
from llmops_events.base import EventData
from llmops_events.v1.training import (
    Hyperparameters,
    TrainingCompleted,
    TrainingFailed,
    TrainingRequested,
    TrainingStarted,
)
from llmops_fine_tuning.adapters.datasets import ArtifactDatasetReader
from llmops_fine_tuning.adapters.defaults import load_defaults
from llmops_fine_tuning.adapters.trainer import LoraSequenceClassificationTrainer
from llmops_fine_tuning.domain.request import (
    ResolvedHyperparameters,
    TrainingDefaults,
    TrainingLimits,
    resolve_job,
)
from llmops_fine_tuning.domain.validation import DatasetSummary, check_dataset_size
from llmops_fine_tuning.errors import TrainingRejected
from llmops_fine_tuning.handlers import FineTuningService, ServiceConfig
from llmops_fine_tuning.main import consumer_options
from llmops_fine_tuning.settings import FineTuningSettings
from llmops_models import ModelRegistry
from llmops_models.snapshots import write_snapshot
from llmops_storage import ArtifactStore

LIMITS = TrainingLimits(
    base_models=["sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"],
    max_epochs=20,
    max_batch_size=256,
    max_length=512,
    max_lora_rank=64,
    min_learning_rate=1e-6,
    max_learning_rate=0.1,
    max_train_examples=1000,
    max_validation_examples=500,
)
DEFAULTS = TrainingDefaults(
    base_model="sentence-transformers/all-MiniLM-L6-v2",
    hyperparameters=ResolvedHyperparameters(
        lora_rank=8,
        lora_alpha=16,
        lora_dropout=0.1,
        target_modules=["query", "value"],
        learning_rate=2e-3,
        epochs=3,
        batch_size=32,
        max_length=64,
        seed=42,
    ),
    limits=LIMITS,
)


def _resolve(request: TrainingRequested, defaults: TrainingDefaults = DEFAULTS, **kwargs: Any) -> Any:
    return resolve_job(request, request_id="req-1", correlation_id=None, defaults=defaults, **kwargs)


def _request(**hyperparameters: Any) -> TrainingRequested:
    return TrainingRequested.model_validate({"model_name": "intents", "hyperparameters": hyperparameters})


@pytest.mark.parametrize(
    ("field", "value", "limit"),
    [
        ("epochs", 1e9, "20"),
        ("epochs", float("inf"), "20"),
        ("batch_size", 1e9, "256"),  # JSON 1e9 is a float; the event schema takes it as an int
        ("max_length", 100_000, "512"),
        ("lora_rank", 128, "64"),  # the event schema allows up to 256
        ("learning_rate", 5.0, "0.1"),
        ("learning_rate", 1e-12, "1e-06"),
    ],
)
def test_a_hyperparameter_beyond_the_policy_is_refused_naming_field_value_and_limit(
    field: str, value: float, limit: str
) -> None:
    with pytest.raises(TrainingRejected) as caught:
        _resolve(_request(**{field: value}))
    assert caught.value.reason == "hyperparameter_out_of_bounds"
    assert not caught.value.retryable
    detail = caught.value.detail
    assert field in detail and limit in detail, detail
    assert f"{value:g}" in detail or str(int(value)) in detail, detail


def test_hyperparameters_at_the_limits_are_accepted() -> None:
    job = _resolve(_request(epochs=20, batch_size=256, max_length=512, lora_rank=64, learning_rate=0.1))
    assert job.hyperparameters.epochs == 20 and job.hyperparameters.batch_size == 256
    job = _resolve(_request(learning_rate=1e-6))
    assert job.hyperparameters.learning_rate == 1e-6


def test_an_empty_target_module_list_is_refused_not_retried() -> None:
    # The event schema allows []; the resolved job needs at least one module. Before, this raised a
    # pydantic ValidationError from the handler: retried, then dead-lettered as handler_failed.
    with pytest.raises(TrainingRejected) as caught:
        _resolve(_request(target_modules=[]))
    assert caught.value.reason == "invalid_hyperparameters" and "target_modules" in caught.value.detail


@pytest.mark.parametrize("base_model", ["/etc", "../../secrets/model", "evil-org/backdoored-bert"])
def test_a_base_model_outside_the_allow_list_is_refused(base_model: str) -> None:
    request = TrainingRequested(model_name="intents", base_model=base_model)
    with pytest.raises(TrainingRejected) as caught:
        _resolve(request)
    assert caught.value.reason == "base_model_not_allowed" and not caught.value.retryable
    assert base_model in caught.value.detail


def test_an_allowed_base_model_and_the_default_are_accepted() -> None:
    assert _resolve(TrainingRequested(model_name="m", base_model="all-MiniLM-L6-v2")).base_model == "all-MiniLM-L6-v2"
    assert _resolve(TrainingRequested(model_name="m")).base_model == DEFAULTS.base_model


def test_defaults_outside_their_own_limits_do_not_load() -> None:
    with pytest.raises(ValueError, match="epochs"):
        TrainingDefaults.model_validate(
            {**DEFAULTS.model_dump(), "hyperparameters": {**DEFAULTS.hyperparameters.model_dump(), "epochs": 50}}
        )
    with pytest.raises(ValueError, match="base_model"):
        TrainingDefaults.model_validate({**DEFAULTS.model_dump(), "base_model": "some/other-model"})


def test_the_shipped_policy_has_limits_and_allows_only_the_packaged_minilm() -> None:
    defaults = load_defaults(FineTuningSettings().defaults_file)
    limits = defaults.limits
    assert set(limits.base_models) <= {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "default"}
    assert defaults.base_model in limits.base_models
    # BANKING77 (10,003 training, 3,080 test examples) fits; 1e9 epochs or examples per batch do not.
    assert limits.max_train_examples >= 10_003 and limits.max_validation_examples >= 3_080
    assert limits.max_epochs < 1e9 and limits.max_batch_size < 1e9
    with pytest.raises(TrainingRejected, match="hyperparameter_out_of_bounds"):
        resolve_job(_request(epochs=1e9), request_id="r", correlation_id=None, defaults=defaults)


def test_the_job_carries_its_time_limit() -> None:
    assert _resolve(_request(), time_limit_s=42.0).time_limit_s == 42.0
    assert FineTuningSettings().max_job_seconds == 3600


def _summary(train: int, validation: int) -> DatasetSummary:
    counts = {"train": {"a": train - train // 2, "b": train // 2}, "validation": {"a": validation}}
    return DatasetSummary(dataset_id="ds-big", content_hash="sha256:x", row_count=train + validation, counts=counts)


def test_a_dataset_beyond_the_example_limits_is_refused() -> None:
    check_dataset_size(_summary(1000, 500), LIMITS)
    with pytest.raises(TrainingRejected) as caught:
        check_dataset_size(_summary(1001, 10), LIMITS)
    assert caught.value.reason == "dataset_too_large" and "1001" in caught.value.detail
    assert "1000" in caught.value.detail and "max_train_examples" in caught.value.detail
    with pytest.raises(TrainingRejected, match="max_validation_examples"):
        check_dataset_size(_summary(10, 501), LIMITS)


def test_consumer_takes_one_request_per_poll_and_polls_less_often_than_the_longest_job() -> None:
    settings = FineTuningSettings(max_job_seconds=1800, fresh_snapshot_wait_s=120)
    options = consumer_options(settings)
    # ``subscribe`` fetches with getmany(max_records=...), which overrides max_poll_records.
    assert options["max_records"] == 1
    assert options["max_poll_interval_ms"] > (1800 + 120) * 1000


# --- the time limit, in the real trainer and through the handler --------------------------------

TEXTS = {
    "card_arrival": ["where is my new card", "my card has not arrived yet", "when will the card be delivered"],
    "exchange_rate": ["what exchange rate do you use", "is the currency rate fair", "how is the fx rate set"],
    "lost_card": ["i lost my card", "my card was stolen", "cannot find my bank card anywhere"],
}


def _frame(per_label: int = 8) -> pd.DataFrame:
    rows = []
    for label, texts in TEXTS.items():
        for i in range(per_label + 2):
            split = "validation" if i >= per_label else "train"
            rows.append({"text": f"{texts[i % len(texts)]} {i}", "label": label, "split": split})
    return pd.DataFrame(rows)


TINY = Hyperparameters(batch_size=1, max_length=16, lora_rank=4, target_modules=["query", "value"])


def test_the_trainer_stops_a_job_that_outlives_its_time_limit(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    write_snapshot(store, _frame(per_label=40), dataset_id="ds")
    data = ArtifactDatasetReader(store).load("ds")
    # 20 epochs of 120 single-example steps: far longer than the 2 s it is allowed.
    request = TrainingRequested(
        model_name="tiny", dataset_id="ds", hyperparameters=TINY.model_copy(update={"epochs": 20})
    )
    job = _resolve(request, time_limit_s=2.0)
    trainer = LoraSequenceClassificationTrainer(num_threads=1, progress_interval_s=60)
    started = time.monotonic()
    with pytest.raises(TrainingRejected) as caught:
        trainer.train(job, data, tmp_path / "out", on_progress=lambda _: None)
    assert caught.value.reason == "time_limit_exceeded" and not caught.value.retryable
    assert "/2400" in caught.value.detail and "2 s" in caught.value.detail, caught.value.detail
    assert time.monotonic() - started < 60
    assert not (tmp_path / "out" / "head.safetensors").exists()


class _Collected:
    def __init__(self) -> None:
        self.published: list[EventData] = []

    async def publish(
        self, data: EventData, *, correlationid: str | None = None, id: str | None = None
    ) -> Envelope[Any]:
        self.published.append(data)
        return Envelope.wrap(data, source="/tests")


def _service(tmp_path: Path, events: _Collected, *, max_job_seconds: float) -> tuple[FineTuningService, ArtifactStore]:
    store = ArtifactStore(str(tmp_path / "store"))
    defaults = load_defaults(FineTuningSettings().defaults_file)
    service = FineTuningService(
        config=ServiceConfig(
            defaults=defaults,
            min_examples_per_label=1,
            worker_name="unit",
            work_dir=tmp_path / "work",
            code_version="unit",
            max_job_seconds=max_job_seconds,
        ),
        datasets=ArtifactDatasetReader(store),
        registry=ModelRegistry(store),
        trainer=LoraSequenceClassificationTrainer(num_threads=1, progress_interval_s=60),
        events=events,
    )
    return service, store


async def test_a_runaway_job_ends_as_training_failed_and_the_next_one_trains(tmp_path: Path) -> None:
    events = _Collected()
    service, store = _service(tmp_path, events, max_job_seconds=8.0)
    write_snapshot(store, _frame(per_label=80), dataset_id="ds")  # 4,800 single-example steps: minutes

    runaway = TrainingRequested(
        model_name="tiny", dataset_id="ds", hyperparameters=TINY.model_copy(update={"epochs": 20})
    )
    started = time.monotonic()
    await service.on_training_requested(Envelope.wrap(runaway, source="/tests"))  # returns: the message is acked
    assert time.monotonic() - started < 60
    [failed] = [e for e in events.published if isinstance(e, TrainingFailed)]
    assert failed.reason == "time_limit_exceeded" and not failed.retryable and failed.model_version == 1

    quick = TrainingRequested(
        model_name="tiny", dataset_id="ds", hyperparameters=TINY.model_copy(update={"epochs": 0.1, "batch_size": 8})
    )
    await service.on_training_requested(Envelope.wrap(quick, source="/tests"))
    [completed] = [e for e in events.published if isinstance(e, TrainingCompleted)]
    assert completed.model_version == 1  # the runaway job published nothing


async def test_an_out_of_bounds_request_is_reported_failed_without_training(tmp_path: Path) -> None:
    events = _Collected()
    service, _ = _service(tmp_path, events, max_job_seconds=60)
    envelope = Envelope.wrap(_request(epochs=1e9, batch_size=1e9), source="/tests")
    envelope = envelope.model_copy(update={"correlationid": "corr-1"})
    await service.on_training_requested(envelope)  # no exception: acked, not retried or dead-lettered
    [failed] = events.published
    assert isinstance(failed, TrainingFailed)
    assert failed.reason == "hyperparameter_out_of_bounds" and not failed.retryable
    assert failed.request_id == envelope.id and failed.model_name == "intents" and failed.model_version is None
    assert "epochs" in failed.detail and "batch_size" in failed.detail
    assert not any(isinstance(e, TrainingStarted) for e in events.published)
