"""Streaming inference engine (ROS-free): one object for the policy node, simulated evaluation and
rosbag replay. Observations in, de-normalised time-stamped action chunks out; it owns every cache."""

from .engine import EngineChunk, EngineConfig, InferenceEngine
from .errors import REASONS, EngineError
from .inputs import Observation

__all__ = ["EngineChunk", "EngineConfig", "InferenceEngine", "EngineError", "REASONS", "Observation"]
