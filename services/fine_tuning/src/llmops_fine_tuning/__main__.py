"""``python -m llmops_fine_tuning``: run the fine-tuning service."""

from llmops_fine_tuning.main import main

main()
