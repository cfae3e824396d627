"""Every redaction entry point normalises Unicode first (issue 17, item 10): the issue's full-width
e-mail and the e-mail with a zero-width space inside are redacted through the gateway's inference
log function and through ingestion's curation of records and of instruction turns, each with the
real ``Redactor`` (the functions the services call, not a copy of them)."""

from __future__ import annotations

import pytest

from llmops_gateway.adapters.inference_log import redacted_text
from llmops_ingestion.domain.curation import RecordInput, curate_batch
from llmops_ingestion.domain.instructions import InstructionInput, Turn, curate_instructions
from llmops_privacy import PiiKind, Redactor

FULL_WIDTH = "ｊａｎｅ．ｄｏｅ＠ｅｘａｍｐｌｅ．ｃｏｍ"  # noqa: RUF001  (the point of the test)
ZERO_WIDTH = "jane.doe@exam\u200bple.com"
SOFT_HYPHEN_AND_RLM = "ja\u00adne.doe@\u200fexample.com"
DISGUISED = [FULL_WIDTH, ZERO_WIDTH, SOFT_HYPHEN_AND_RLM]


@pytest.mark.parametrize("address", DISGUISED)
def test_the_gateway_inference_log_redacts_a_disguised_e_mail(redactor: Redactor, address: str) -> None:
    assert redacted_text(redactor, f"please write to {address} today") == "please write to <EMAIL> today"


@pytest.mark.parametrize("address", DISGUISED)
def test_ingestion_curation_redacts_a_disguised_e_mail_in_text_and_metadata(redactor: Redactor, address: str) -> None:
    record = RecordInput(
        tenant="acme",
        source="crm",
        text=f"please write to {address} today",
        label="contact",
        record_id="r-1",
        metadata={"from": address},
    )
    (curated,) = curate_batch([record], redact=redactor.redact)
    assert curated.text == "please write to <EMAIL> today"
    assert curated.metadata == {"from": "<EMAIL>"}
    assert curated.pii_counts == {PiiKind.EMAIL: 2}


@pytest.mark.parametrize("address", DISGUISED)
def test_ingestion_curation_redacts_a_disguised_e_mail_in_every_turn(redactor: Redactor, address: str) -> None:
    example = InstructionInput(
        tenant="acme",
        source="playbook",
        turns=(Turn("user", f"my address is {address}"), Turn("assistant", f"noted: {address}")),
    )
    (curated,) = curate_instructions([example], redact=redactor.redact)
    assert [turn.content for turn in curated.turns] == ["my address is <EMAIL>", "noted: <EMAIL>"]
