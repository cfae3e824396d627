"""``python -m llmops_ingestion``: run the ingestion service."""

from llmops_ingestion.main import main

main()
