from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from llmops_fine_tuning.adapters.defaults import load_defaults
from llmops_fine_tuning.handlers import FineTuningService, ServiceConfig
from llmops_fine_tuning.settings import FineTuningSettings


class _Snapshots:
    """Snapshot listing whose newest snapshot appears after a few looks (as ingestion cuts it)."""

    def __init__(self, appears_after_looks: int, created_at: datetime) -> None:
        self.looks = 0
        self._appears_after = appears_after_looks
        self._created_at = created_at

    def latest(self, content: str = "records") -> tuple[str, datetime] | None:
        assert content == "records"
        self.looks += 1
        if self.looks > self._appears_after:
            return "fresh", self._created_at
        return "old", self._created_at - timedelta(hours=1)


def _service(datasets: Any, wait_s: float) -> FineTuningService:
    config = ServiceConfig(
        defaults=load_defaults(FineTuningSettings().defaults_file),
        min_examples_per_label=1,
        worker_name="unit",
        work_dir=Path("/nonexistent"),
        code_version="unit",
        fresh_snapshot_wait_s=wait_s,
    )
    return FineTuningService(config=config, datasets=datasets, registry=None, trainer=None, events=None)  # type: ignore[arg-type]


async def test_a_drift_retraining_waits_for_the_snapshot_cut_after_its_request() -> None:
    requested_at = datetime.now(UTC)
    snapshots = _Snapshots(appears_after_looks=2, created_at=requested_at + timedelta(seconds=1))
    await _service(snapshots, wait_s=30)._wait_for_fresh_snapshot(requested_at, 30)
    assert snapshots.looks == 3


async def test_without_a_fresh_snapshot_it_gives_up_after_the_wait() -> None:
    requested_at = datetime.now(UTC)
    snapshots = _Snapshots(appears_after_looks=10**6, created_at=requested_at)
    await _service(snapshots, wait_s=1.5)._wait_for_fresh_snapshot(requested_at, 1.5)
    assert 1 <= snapshots.looks <= 3
