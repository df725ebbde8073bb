"""Why the engine refused an input or a chunk.

Every refusal is an `EngineError` whose ``reason`` is one of the short codes below, so a node can count
refusals per reason and publish them; the message says what exactly was wrong. A refused observation
changes no cache (validation happens before anything is written), and a refused chunk is never returned.
"""

from __future__ import annotations

REASONS: dict[str, str] = {
    "missing_camera": "a camera of the policy's FeatureSpec is absent from the observation",
    "unknown_camera": "the observation has a camera the policy does not know",
    "bad_image": "a frame that is not HxWx3 uint8 RGB (wrong dtype, channels, rank or batch size)",
    "missing_state": "the policy uses the joint state and none was given",
    "bad_state": "joint state of the wrong length or batch size",
    "missing_goal": "the policy needs a goal embedding and none was given",
    "bad_goal": "goal embedding of the wrong size",
    "goal_changed": "a different goal mid-episode (call reset() with the new goal)",
    "nan_input": "NaN or inf in the joint state, goal embedding or time stamp",
    "bad_stamp": "a time stamp not newer than the previous observation's",
    "no_observation": "act() before any observation since reset()",
    "bad_noise": "explicit noise of the wrong shape",
    "bad_committed": "committed actions (real-time chunking) of the wrong shape, not finite, with weights outside "
                     "[0, 1], or given to an engine that samples without them",
    "nan_output": "the produced chunk holds NaN or inf; it is dropped",
    "history_full": "a stream history with a preallocated cache (D-Tr's keys and values) is full: reset() the row",
}


class EngineError(Exception):
    """A refused input or chunk. ``reason`` is a key of `REASONS`."""

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown engine refusal reason {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.detail = message
