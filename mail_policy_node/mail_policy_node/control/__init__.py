"""ROS-free control core between policy chunks and the FR3 (no rclpy here).

- ``safety``: SafetyFilter, the per-cycle limit enforcement every command passes through.
- ``chunks``: ActionChunk and ChunkScheduler (latency compensation, blending across chunks).
- ``watchdog``: Watchdog (a chunk late for its policy's replanning period, e-stop).
- ``controller``: ArmController, combining the three with modes, counters and an injected clock.
- ``franky_arm``: FrankyArm, the adapter to a real or simulated FR3 through franky (imported lazily).
- ``limits`` / ``kinematics``: FR3 limits with their sources, DH forward kinematics and a small IK.
"""

from .chunks import ActionChunk, ChunkRejection, ChunkScheduler, SchedulerConfig
from .controller import ArmController, ControllerConfig, CycleOutput, Mode, StatusSnapshot
from .limits import JointLimits, fr3_limits
from .safety import CommandState, Limit, SafetyConfig, SafetyFilter, check_command
from .watchdog import TripReason, Watchdog, WatchdogConfig

__all__ = [
    "ActionChunk", "ArmController", "ChunkRejection", "ChunkScheduler", "CommandState", "ControllerConfig",
    "CycleOutput", "JointLimits", "Limit", "Mode", "SafetyConfig", "SafetyFilter", "SchedulerConfig",
    "StatusSnapshot", "TripReason", "Watchdog", "WatchdogConfig", "check_command", "fr3_limits",
]
