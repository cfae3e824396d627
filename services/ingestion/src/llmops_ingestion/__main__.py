"""``python -m llmops_ingestion``: run the ingestion service."""

from llmops_ingestion.main import main

# Guarded: the Feast push worker is a spawned process, which imports the parent's main module.
if __name__ == "__main__":
    main()
