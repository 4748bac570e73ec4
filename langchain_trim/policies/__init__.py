"""Routing policies: the seam between PRM scores and the escalate decision."""

from langchain_trim.policies.base import RouteDecision, RouteObservation, RoutingPolicy
from langchain_trim.policies.threshold import ThresholdPolicy

__all__ = ["RouteDecision", "RouteObservation", "RoutingPolicy", "ThresholdPolicy"]
