"""The replay's topic map: `data.topics.TopicMap`, the one map of everything that reads bags (training
takes the same one; see that module for the YAML format). Kept here for the replay's imports."""

from __future__ import annotations

from ..data.topics import TopicMap

__all__ = ["TopicMap"]
