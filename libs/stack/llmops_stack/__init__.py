"""The infrastructure that tests, benchmarks and the ``llmops`` CLI run beside the platform:
Kafka (KRaft) and Triton as background processes, the platform's topics, free ports, the
checkout's build paths and the local gateway key. Nothing here names a service."""

from .cluster import ClusterNode, KafkaCluster
from .components import (
    Component,
    ComponentStatus,
    KafkaComponent,
    TritonComponent,
    kafka_component,
    not_running,
    running,
)
from .kafka import KafkaBroker
from .paths import RepoPaths, RepositoryNotFoundError, find_repo_root, repo_paths
from .ports import free_port
from .processes import ManagedProcess, NullProgress, Progress, StackError
from .topics import TopicCreationError, TopicsReport, ensure_topics
from .triton import TritonServer, build_backend_dir, inspect_runtime

__all__ = [
    "ClusterNode",
    "Component",
    "ComponentStatus",
    "KafkaBroker",
    "KafkaCluster",
    "KafkaComponent",
    "ManagedProcess",
    "NullProgress",
    "Progress",
    "RepoPaths",
    "RepositoryNotFoundError",
    "StackError",
    "TopicCreationError",
    "TopicsReport",
    "TritonComponent",
    "TritonServer",
    "build_backend_dir",
    "ensure_topics",
    "find_repo_root",
    "free_port",
    "inspect_runtime",
    "kafka_component",
    "not_running",
    "repo_paths",
    "running",
]
