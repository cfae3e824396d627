import pytest

from llmops_ingestion.domain.redaction import Redactor


@pytest.fixture(scope="session")
def redactor() -> Redactor:
    # Built once: constructing a Redactor imports Presidio (seconds).
    return Redactor()
