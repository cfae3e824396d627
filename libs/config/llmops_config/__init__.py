"""Shared configuration: settings base and structured logging."""

from llmops_config.logging import configure_logging
from llmops_config.settings import PlatformSettings

__all__ = ["PlatformSettings", "configure_logging"]
