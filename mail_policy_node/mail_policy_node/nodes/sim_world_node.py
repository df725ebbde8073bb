"""Simulated world node: the task scene served by franky-sim over the libfranka protocol.

The controller connects to `hostname` with franky exactly as to a real FR3. This node publishes what
the simulated cameras need to render the same scene in their own processes: the scene (MJCF, task,
parameters; transient-local, once) and state snapshots at `state_rate_hz`, stamped with the time of
capture (the cameras' acquisition time).

With ``use_sim_time`` (the `sim` profile) the world is the graph's clock: it publishes /clock from the
physics, every CLOCK_STEP_S of simulated time, as the wall-clock time the world started plus the simulated
seconds since (so the clock never goes back when the next episode's world starts), and stamps each
snapshot with that clock when it captured it. The policy and the controller follow that clock (their
`NodeClock`), so a chunk's actions are due at the simulated arm's pace, and the stack's latencies count in
simulated seconds, however far behind real time the host runs the physics (`real_time_factor` paces it
slower on purpose). Without it, stamps are the host's clock.

It judges the task: events on /mail/episode: "ready" when served, "start" when the episode starts, "end"
with success. One episode per process: the demo restarts the world (with another seed) per episode.

The episode starts with the first action chunk planned on this world: its clock's zero is the snapshot
that chunk's observation was drawn from (the chunk's stamp), as `mail-il eval`'s episode starts at the
observation of its first chunk. That clock is the time limit's (camera start-up and policy loading do
not eat it) and the task's: a snapshot's "time" is the episode's simulated seconds, 0 before the start.
The memory task shows its cue for the episode's first second. Counted from the world's start, the cue
had gone out before the cameras had compiled the scene on a loaded machine (first frame at 3.8 s of
simulated time), so a policy through the stack never saw what it had to remember; counted from the arm's
first motion, a policy that waits for the cue to go out (as the expert demonstrates) would never start.
"""

from __future__ import annotations

import collections
import json
import time

import numpy as np
from mail_msgs.msg import ActionChunk
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, String

from mail_policy_node.data.bags import json_default
from mail_policy_node.nodes import NodeClock, run
from mail_policy_node.nodes.diagnostics import OK, Diagnostics
from mail_policy_node.nodes.parameters import declare_table
from mail_policy_node.nodes.ros_convert import from_time, to_time
from mail_policy_node.spec import TOPIC_ACTION_CHUNK, TOPIC_EPISODE, relative

TOPIC_SIM_SCENE = "/sim/scene"
TOPIC_SIM_STATE = "/sim/state"
STATE_FIELDS = ("stamp", "time", "qpos", "mocap_pos", "mocap_quat")
# [s of simulated time] between /clock messages: the graph's timers and loops resolve to this (the controller's
# 10 ms cycle is a multiple of it). Each /clock costs every node that follows it a Python callback: at 2 ms the
# policy's inference took twice as long on the 2-core machine
CLOCK_STEP_S = 0.005


def pack_state(stamp: float, state: dict) -> Float64MultiArray:
    """[stamp, time, qpos..., mocap_pos..., mocap_quat...] with the sizes in layout.dim."""
    parts = [np.array([stamp]), np.array([state["time"]]), state["qpos"].ravel(), state["mocap_pos"].ravel(),
             state["mocap_quat"].ravel()]
    m = Float64MultiArray()
    m.layout.dim = [MultiArrayDimension(label=name, size=len(p), stride=1) for name, p in zip(STATE_FIELDS, parts)]
    m.data = np.concatenate(parts).tolist()
    return m


def unpack_state(m) -> tuple[float, dict]:
    sizes = {d.label: d.size for d in m.layout.dim}
    if tuple(sizes) != STATE_FIELDS or sum(sizes.values()) != len(m.data):
        raise ValueError(f"malformed sim state: fields {list(sizes)} sizes {sum(sizes.values())} vs {len(m.data)}")
    data, out, i = np.asarray(m.data), {}, 0
    for name in STATE_FIELDS:
        out[name] = data[i:i + sizes[name]]
        i += sizes[name]
    out["mocap_pos"] = out["mocap_pos"].reshape(-1, 3)
    out["mocap_quat"] = out["mocap_quat"].reshape(-1, 4)
    stamp = float(out.pop("stamp")[0])
    out["time"] = float(out["time"][0])
    return stamp, out


SCENE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# An episode's events (ready, start, end) all stay for a subscriber that joins late: with the scene's depth
# of one, an observer that discovered a new world after the arm had started got only "start" and waited
# for "ready" until it timed out (2 of 30 episodes of a fidelity run on a loaded machine).
EPISODE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class SimWorldNode(Node):
    def __init__(self):
        super().__init__("sim_world")
        self.clock = NodeClock(self)
        from mail_policy_node.sim.franky import SIM_WORLD_PARAMETERS, FrankySimScene

        p = declare_table(self, SIM_WORLD_PARAMETERS)
        task, seed, hostname, rate = p["task"], p["seed"], p["hostname"], p["state_rate_hz"]
        self.timeout = p["episode_timeout"]  # 0: the task's own limit
        self.motion_timeout = p["motion_timeout"]  # ready -> the episode's start

        self.scene = FrankySimScene(task, seed=seed, hostname=hostname, realtime=1.0 / p["real_time_factor"])
        self.clock_base = time.time()  # /clock = this + the simulated seconds since the world started
        if self.clock.sim:
            self.clock_pub = self.create_publisher(Clock, "/clock", 10)
            self._clock_due = 0.0
            self._clock_now = self.clock_base  # the newest /clock published
            self.scene.after_step = self._publish_clock
        self.scene.start()
        self.task_name, self.seed = task, seed
        if self.timeout <= 0:
            self.timeout = 0.1 * self.scene.task.max_steps
        self.scene_pub = self.create_publisher(String, relative(TOPIC_SIM_SCENE), SCENE_QOS)
        self.state_pub = self.create_publisher(Float64MultiArray, relative(TOPIC_SIM_STATE), 10)
        self.episode_pub = self.create_publisher(String, relative(TOPIC_EPISODE), EPISODE_QOS)
        self.scene_pub.publish(String(data=json.dumps(
            {"task": task, "seed": seed, "params": self.scene.params, "xml": self.scene.xml}, default=json_default)))
        self.t_ready = self._now()
        self.t_start = None  # the episode's start (the stamp of its first chunk's observation)
        self.wall_start = 0.0
        self.sim_t_start = 0.0  # the simulated clock then (franky-sim may run behind the wall clock)
        # (stamp, simulated time, wall-clock time) of the snapshots published before the start, oldest first
        self._snapshots = collections.deque(maxlen=int(60 * rate))
        self.create_subscription(ActionChunk, relative(TOPIC_ACTION_CHUNK), self._on_chunk,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.start_distance = self.scene.goal_distance()  # task distance to done [m] (None: the task has none)
        self.min_distance = self.start_distance
        self.ended = False
        self.diagnostics = Diagnostics(self, hardware_id=f"franky-sim {self.scene.hostname}")
        self._event("ready")
        self.create_timer(1.0 / rate, self.tick)
        self.get_logger().info(f"task {task} seed {seed} served by franky-sim at {self.scene.hostname}")

    def _now(self) -> float:
        """With use_sim_time the world's clock (what /clock says), else the host's."""
        return self._clock_now if self.clock.sim else time.time()

    def _publish_clock(self) -> None:
        """In the physics thread, after each step: /clock every CLOCK_STEP_S of simulated time."""
        t = self.scene.sim_time()
        if t + 1e-9 >= self._clock_due:
            self._clock_due = t + CLOCK_STEP_S
            self._clock_now = self.clock_base + t
            self.clock_pub.publish(Clock(clock=to_time(self._clock_now)))

    def _event(self, event: str, **fields) -> None:
        self.episode_pub.publish(String(data=json.dumps(
            {"event": event, "task": self.task_name, "seed": self.seed, "t": time.time(), **fields})))

    def _on_chunk(self, msg) -> None:
        """The first chunk planned on one of this world's snapshots starts the episode at that snapshot."""
        stamp = from_time(msg.header.stamp)
        if self.t_start is not None or self.ended:
            return
        # the newest snapshot at or before the observation; none: planned before this world served anything
        snapshot = next(((sim, wall) for t, sim, wall in reversed(self._snapshots) if t <= stamp), None)
        if snapshot is not None:
            self.t_start = stamp
            self.sim_t_start, self.wall_start = snapshot  # wall: for the episode's wall-clock duration
            self._event("start")

    def tick(self) -> None:
        # on the world's clock: the newest /clock, what every node reads then (a stamp between two clock steps
        # would lie up to a step ahead of the graph's time, and the policy's latency read negative)
        stamp = self._now()
        state = self.scene.capture_state()
        # the task's clock: the episode's simulated seconds (module docstring)
        if self.t_start is None:
            self._snapshots.append((stamp, state["time"], time.time()))
            state["time"] = 0.0
        else:
            state["time"] -= self.sim_t_start
        self.state_pub.publish(pack_state(stamp, state))
        phase = "ended" if self.ended else "ready" if self.t_start is None else "running"
        self.diagnostics.update(OK, f"{self.task_name} seed {self.seed}: episode {phase}",
                                {"task": self.task_name, "seed": self.seed, "episode": phase,
                                 "min_distance_m": self.min_distance})
        if self.ended:
            return
        if self.t_start is None:
            if stamp - self.t_ready > self.motion_timeout:
                self.ended = True
                self._event("end", success=False, failed=True, duration=0.0,
                            reason="no action chunk came: the arm never moved")
            return
        success, failed = self.scene.evaluate()
        distance = self.scene.goal_distance()
        if distance is not None:
            self.min_distance = min(self.min_distance, distance)
        elapsed = time.time() - self.wall_start
        sim_elapsed = state["time"]
        # the timeout counts the simulated arm's seconds, as the synchronous evaluation's step limit does and as
        # the controller keeps to the arm's clock: where franky-sim runs behind the wall clock (0.35x on a loaded
        # 2-core machine) an episode of wall-clock seconds gave the arm a third of its time
        if success or failed or sim_elapsed > self.timeout:
            self.ended = True
            # duration: wall-clock seconds; sim_duration: simulated seconds (what the timeout counts)
            self._event("end", success=bool(success), failed=bool(failed), duration=round(elapsed, 3),
                        sim_duration=round(sim_elapsed, 3), timeout=self.timeout,
                        start_distance=self.start_distance, final_distance=distance, min_distance=self.min_distance)
            self.get_logger().info(f"episode end: success={success} after {sim_elapsed:.1f} s simulated "
                                   f"({elapsed:.1f} s wall)")

    def destroy_node(self):
        self.scene.close()
        return super().destroy_node()


def main(args=None):
    run(SimWorldNode, args)


if __name__ == "__main__":
    main()
