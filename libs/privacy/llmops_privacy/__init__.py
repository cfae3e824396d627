"""PII redaction shared by everything that keeps or forwards user text (ingestion, the gateway)."""

from llmops_privacy.redaction import Finding, PiiKind, RedactionResult, Redactor, normalize_text

__all__ = ["Finding", "PiiKind", "RedactionResult", "Redactor", "normalize_text"]
