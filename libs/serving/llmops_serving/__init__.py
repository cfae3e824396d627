"""What serving needs to agree on: deployment state folded from the deployments topic, sticky
canary routing, and the Triton names of deployed versions."""

from llmops_serving.champions import Champions, ChampionTable, FollowedChampions
from llmops_serving.feed import DeploymentFeed
from llmops_serving.routing import Route, choose_route, request_bucket
from llmops_serving.state import DeploymentBook, ModelDeployment
from llmops_serving.triton import parse_triton_name, triton_name

__all__ = [
    "ChampionTable",
    "Champions",
    "DeploymentBook",
    "DeploymentFeed",
    "FollowedChampions",
    "ModelDeployment",
    "Route",
    "choose_route",
    "parse_triton_name",
    "request_bucket",
    "triton_name",
]
