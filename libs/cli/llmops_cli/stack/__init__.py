"""The local stack behind ``llmops stack up|down|status``: Kafka (KRaft) and Triton as background processes."""

from .kafka import KafkaBroker
from .paths import RepoPaths, find_repo_root, repo_paths
from .processes import ManagedProcess, NullProgress, Progress, StackError
from .stack import Component, ComponentStatus, KafkaComponent, TritonComponent, components, down, status, up
from .topics import TopicsReport, ensure_topics
from .triton import TritonServer, build_backend_dir, inspect_runtime

__all__ = [
    "Component",
    "ComponentStatus",
    "KafkaBroker",
    "KafkaComponent",
    "ManagedProcess",
    "NullProgress",
    "Progress",
    "RepoPaths",
    "StackError",
    "TopicsReport",
    "TritonComponent",
    "TritonServer",
    "build_backend_dir",
    "components",
    "down",
    "ensure_topics",
    "find_repo_root",
    "inspect_runtime",
    "repo_paths",
    "status",
    "up",
]
