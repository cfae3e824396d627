"""The benchmark harness's outside view of a service: Prometheus text into counters, a consumer
group's state and committed offsets from the broker's answers, and a service script's JSON
(with reasons for what it could not measure) into rows. Pure and fast (no broker, no service)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from bench import monitoring
from bench.framework import BenchContext, Reporter, ServiceProcess, parse_metrics
from bench.ingestion import _committed_through, _group_assigned, _ingestion_counters
from bench.script import rows_from_summary, run_script

RAW = "llmops.records.raw.v1"
EXPOSITION = f"""# HELP llmops_ingestion_messages_total Messages read, by topic and outcome of processing.
# TYPE llmops_ingestion_messages_total counter
llmops_ingestion_messages_total{{outcome="ok",topic="{RAW}"}} 1900.0
llmops_ingestion_messages_total{{outcome="dead_lettered",topic="{RAW}"}} 100.0
llmops_ingestion_messages_total{{outcome="ok",topic="llmops.inference.v1"}} 7.0
# TYPE llmops_ingestion_records_accepted_total counter
llmops_ingestion_records_accepted_total{{labelled="true"}} 1800.0
llmops_ingestion_records_accepted_total{{labelled="false"}} 50.0
# TYPE llmops_ingestion_duplicates_total counter
llmops_ingestion_duplicates_total{{kind="record"}} 50.0
# TYPE llmops_ingestion_dlq_total counter
llmops_ingestion_dlq_total{{reason="text_too_long",stage="validation"}} 100.0
# TYPE llmops_ingestion_pii_redacted_total counter
llmops_ingestion_pii_redacted_total{{kind="EMAIL_ADDRESS"}} 20.0
llmops_ingestion_pii_redacted_total{{kind="PHONE_NUMBER"}} 21.0
# TYPE llmops_ingestion_feast_rows_pushed_total counter
llmops_ingestion_feast_rows_pushed_total 1850.0
"""


def test_the_services_metrics_become_the_ingestion_counters() -> None:
    counters = _ingestion_counters(parse_metrics(EXPOSITION), RAW)
    assert counters == {
        "outcome_dead_lettered": 100.0,
        "outcome_ok": 1900.0,  # the inference topic's messages are not records
        "accepted": 1850.0,
        "duplicates": 50.0,
        "dlq": 100.0,
        "pii_redacted": 41.0,
        "feast_rows_pushed": 1850.0,
    }


def test_a_group_counts_as_assigned_only_when_stable_with_partitions() -> None:
    def answer(state: str, assignment: bytes) -> dict[str, object]:
        members = [{"member_id": "m", "member_assignment": assignment}] if state != "Dead" else []
        return {"groups": [{"error_code": 0, "group": "g", "state": state, "members": members}]}

    assert _group_assigned(answer("Stable", b"\x00\x01partitions"), "g")
    assert not _group_assigned(answer("Stable", b"\x00\x01partitions"), "another")
    assert not _group_assigned(answer("PreparingRebalance", b"\x00\x01"), "g")
    assert not _group_assigned(answer("CompletingRebalance", b""), "g")
    assert not _group_assigned(answer("Dead", b""), "g")


def test_committed_offsets_count_up_to_the_ends() -> None:
    ends = {TopicPartition(RAW, 0): 600, TopicPartition(RAW, 1): 400}
    committed = {
        TopicPartition(RAW, 0): OffsetAndMetadata(600, ""),
        TopicPartition(RAW, 1): OffsetAndMetadata(-1, ""),  # nothing committed yet
    }
    assert _committed_through(committed, ends) == 600
    committed[TopicPartition(RAW, 1)] = OffsetAndMetadata(450, "")  # past the end seen: capped
    assert _committed_through(committed, ends) == 1000
    assert _committed_through({}, ends) == 0


def test_a_reason_the_script_gives_becomes_the_rows_reason() -> None:
    summary = {
        "report_1k_seconds": 1.5,
        "report_10k_seconds": 4.2,
        "embed_10k_seconds": 6.0,
        "false_alarms": 1,
        "unmeasured": {"delay_windows": "a request came before the shift began (a false alarm)"},
    }
    rows = {row.name: row for row in rows_from_summary(summary, monitoring.KEYS)}
    assert [rows[f.name].name for f in monitoring.FIGURES] == [f.name for f in monitoring.FIGURES]
    assert rows[monitoring.REPORT_10K.name].met and rows[monitoring.REPORT_10K.name].value == 4.2
    assert not rows[monitoring.FALSE_ALARMS.name].met
    delay = rows[monitoring.DELAY_WINDOWS.name]
    assert not delay.measured and delay.reason == "a request came before the shift began (a false alarm)"
    events = rows[monitoring.DELAY_EVENTS.name]
    assert not events.measured and events.reason == "the script's JSON has no numeric 'delay_events'"


async def test_the_monitoring_rows_come_from_a_script_run_as_a_process(tmp_path: Path) -> None:
    script = tmp_path / "bench_fake.py"
    script.write_text(
        "import json, sys\n"
        "print('progress', file=sys.stderr)\n"
        "print(json.dumps({'report_1k_seconds': 1.0, 'report_10k_seconds': 12.0, 'embed_10k_seconds': 5.0,\n"
        "                  'delay_windows': 1.0, 'delay_events': 1000, 'false_alarms': 0}, indent=2))\n"
        "print('a summary line')\n"
    )
    context = BenchContext(reporter=Reporter(total=1), python=sys.executable)
    rows = {
        row.name: row for row in rows_from_summary(await run_script(context, script, timeout_s=30), monitoring.KEYS)
    }
    assert rows[monitoring.DELAY_WINDOWS.name].met and rows[monitoring.DELAY_EVENTS.name].value == 1000
    assert not rows[monitoring.REPORT_10K.name].met  # 12 s against a target of < 10 s
    assert rows[monitoring.FALSE_ALARMS.name].met


async def test_a_service_process_gets_its_settings_from_the_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmops_config import PlatformSettings

    monkeypatch.setenv("LLMOPS_BENCH_INGESTION_RECORDS", "5")  # the bench's own: not passed on
    context = BenchContext(reporter=Reporter(total=1), python=sys.executable, _work_dir=tmp_path)
    platform = PlatformSettings(kafka_bootstrap_servers="127.0.0.1:1", var_dir=tmp_path)
    service = ServiceProcess(
        context,
        "json.tool",  # reads stdin (empty), fails and exits: a process that stops at once
        platform=platform,
        metrics_port_env="LLMOPS_EXAMPLE_METRICS_PORT",
        settings={"LLMOPS_EXAMPLE_GROUP_ID": "g"},
    )
    assert "LLMOPS_BENCH_INGESTION_RECORDS" not in service.env
    assert service.env["LLMOPS_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:1"
    assert service.env["LLMOPS_EXAMPLE_METRICS_PORT"] == str(service.metrics_port)
    assert service.env["LLMOPS_EXAMPLE_GROUP_ID"] == "g"
    await service.start()
    assert await service.stop() is not None
    with pytest.raises(RuntimeError, match=r"json\.tool exited with"):
        service.check_alive()
    assert await service.metrics() is None  # nothing listens on its metrics port
