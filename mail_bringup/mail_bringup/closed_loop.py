"""Closed-loop episodes of the `sim` profile through the whole ROS stack, with numbers.

Policy and camera nodes run for the whole session; each episode starts a fresh simulated world
(franky-sim with the task at a new seed) and a fresh controller connected to it, resets the policy's
episode, and waits for the world's end-of-episode event. Measured on the way: success, episode
duration, end-to-end latency (camera acquisition stamp -> chunk publication, from PolicyStatus), and
safety figures from every command the controller sent (largest velocity relative to the filter's
limit, limit hits, watchdog trips, rejected chunks).
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from mail_policy_node.training.evaluate import median_or_none


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    duration_s: float
    chunks: int
    max_velocity_ratio: float  # max over sent commands of |dq_i| / dq_max_i (<= 1: within limits)
    max_acceleration_ratio: float  # the same for the acceleration between consecutive commands
    position_violations: int  # commands outside the filter's joint position limits (margin included)
    limit_hits: int  # ControllerStatus.limit_hits: cycles in which the safety filter overrode the command
    watchdog_trips: int
    chunks_rejected: int
    start_distance: float | None = None  # task distance to done [m] when the episode began (sim.tasks)
    final_distance: float | None = None  # ... when it ended
    min_distance: float | None = None  # closest the episode came
    cycle_jitter_p99_ms: float = 0.0  # controller's control-cycle period deviation from nominal
    cycles: int = 0  # the episode's controller's control cycles (ControllerStatus.cycles) ...
    cycles_overrun: int = 0  # ... and those that started late
    limits: dict = field(default_factory=dict)  # limit name -> cycles (ControllerStatus.limit_names/_counts)
    failed: bool = False  # the task judged the episode failed (memory: the wrong pad), not a timeout
    reason: str = ""  # the world's reason for an end without a verdict (e.g. "the arm never moved")
    sim_duration_s: float | None = None  # simulated seconds from the episode's start (first chunk) to the end
    timeout_s: float | None = None  # the world's episode timeout [s of simulated time from the start]
    rejections: dict = field(default_factory=dict)  # why chunks were refused -> chunks (ControllerStatus)
    actions_dropped_stale: int = 0  # actions the controller skipped because their due time had passed
    chunk_age_p50_ms: float | None = None  # chunk arrival here minus its stamp (camera acquisition)
    chunk_age_p99_ms: float | None = None
    error: str | None = None  # the episode could not run to its end (keep_going): why
    controller_error: str = ""  # the controller ended the episode in ERROR (a reflex, tracking): its reason.
    # Its commands after that follow the measured arm at rest and are not sent: the step to them is no command

    def ended_by(self) -> str:
        """success, error (did not run to its end), no_motion (the arm never moved), task_failure (the
        task said failed), watchdog (the controller held the arm after a late chunk, then the time ran
        out) or timeout (the time ran out)."""
        if self.error or self.controller_error:
            return "error"
        if self.success:
            return "success"
        if self.reason:
            return "no_motion" if "never moved" in self.reason else "error"
        if self.failed:
            return "task_failure"
        return "watchdog" if self.watchdog_trips else "timeout"

    @classmethod
    def errored(cls, seed: int, error: str) -> EpisodeResult:
        return cls(seed=seed, success=False, duration_s=0.0, chunks=0, max_velocity_ratio=0.0,
                   max_acceleration_ratio=0.0, position_violations=0, limit_hits=0, watchdog_trips=0,
                   chunks_rejected=0, error=error)


def command_accelerations(dq: np.ndarray, stamps: np.ndarray, period_hz: float) -> np.ndarray:
    """Per-cycle accelerations (N-1, 7) of the commanded velocities ``dq`` (N, 7) as the safety filter limits
    them (dq' - dq over one control period), from the commands this observer received. A pair whose publish
    stamps lie more than 1.5 cycles apart has a command between them this observer did not get (its queue
    dropped it on a loaded machine): differenced over one period it read as up to 15x the limit; such pairs
    are left out (rows of zeros), so what is reported is what the controller sent. A cycle is the median
    interval between the commands, at least one period: the controller keeps to the arm's clock, and against
    franky-sim at a third of real time its cycles are 30 ms of wall clock apart."""
    ddq = np.diff(dq, axis=0) * period_hz
    gaps = np.diff(stamps)
    cycle = max(1.0 / period_hz, float(np.median(gaps))) if len(gaps) else 1.0 / period_hz
    return np.where((gaps <= 1.5 * cycle)[:, None], ddq, 0.0)


@dataclass
class ClosedLoopReport:
    task: str
    checkpoint: str
    episodes: list = field(default_factory=list)
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    inference_p50_ms: float = 0.0
    controller_jitter_p99_ms: float = 0.0
    # cadence: the policy node's ticks and the controller's cycles over the run, and those that started late
    policy_ticks: int = 0
    policy_ticks_overrun: int = 0
    controller_cycles: int = 0
    controller_cycles_overrun: int = 0
    # the stack ran on the world's clock (use_sim_time: /clock came): its plans kept the simulated arm's pace
    # at any sim_per_wall, and its latencies are simulated seconds
    on_world_clock: bool = False

    def sim_per_wall(self) -> float | None:
        """Simulated seconds per wall second over the episodes (franky-sim's pace on this machine; a real
        FR3's is 1.0), or None when no episode ran to a simulated end."""
        pairs = [(e.sim_duration_s, e.duration_s) for e in self.episodes if e.sim_duration_s is not None]
        wall = sum(w for _, w in pairs)
        return round(sum(sim for sim, _ in pairs) / wall, 3) if wall > 0 else None

    def summary(self) -> dict:
        n = len(self.episodes)
        wins = sum(e.success for e in self.episodes)
        return dict(task=self.task, checkpoint=self.checkpoint, episodes=n, successes=wins,
                    success_rate=wins / n if n else 0.0,
                    latency_p50_ms=round(self.latency_p50_ms, 1), latency_p99_ms=round(self.latency_p99_ms, 1),
                    inference_p50_ms=round(self.inference_p50_ms, 1),
                    controller_jitter_p99_ms=round(self.controller_jitter_p99_ms, 2),
                    policy_ticks=self.policy_ticks, policy_ticks_overrun=self.policy_ticks_overrun,
                    controller_cycles=self.controller_cycles, controller_cycles_overrun=self.controller_cycles_overrun,
                    max_velocity_ratio=round(max((e.max_velocity_ratio for e in self.episodes), default=0.0), 3),
                    max_acceleration_ratio=round(max((e.max_acceleration_ratio for e in self.episodes),
                                                     default=0.0), 3),
                    position_violations=sum(e.position_violations for e in self.episodes),
                    limit_hits=sum(e.limit_hits for e in self.episodes),
                    limits=dict(sum((collections.Counter(e.limits) for e in self.episodes), collections.Counter())),
                    watchdog_trips=sum(e.watchdog_trips for e in self.episodes),
                    chunks_rejected=sum(e.chunks_rejected for e in self.episodes),
                    goal_distance_start_m=_median([e.start_distance for e in self.episodes]),
                    goal_distance_final_m=_median([e.final_distance for e in self.episodes]),
                    sim_per_wall=self.sim_per_wall(), on_world_clock=self.on_world_clock,
                    per_episode=[{**asdict(e), "ended_by": e.ended_by()} for e in self.episodes])


def _median(values) -> float | None:
    m = median_or_none(values)
    return None if m is None else round(m, 4)


def private_sim_graph() -> tuple[dict, str]:
    """A private ROS graph for a `sim` profile run: its environment (applied to this process too, so
    nodes made here join it) and a loopback address of its own for franky-sim."""
    from mail_policy_node import rosenv

    env = rosenv.ros_environment()
    os.environ.update(env)
    return env, f"127.0.{int(env['ROS_DOMAIN_ID'])}.{1 + os.getpid() % 250}"


class SpunNode:
    """An rclpy node of this process (rclpy initialised here), spun by a thread of its own once
    ``start`` is called: create its subscriptions and clients first."""

    def __init__(self, name: str):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        rclpy.init()
        self.node = rclpy.create_node(name)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _spin(self):
        while not self._stop.is_set():
            self._executor.spin_once(timeout_sec=0.05)

    def close(self):
        import rclpy

        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.node.destroy_node()
        rclpy.try_shutdown()


class _Observer(SpunNode):
    """Watches the stack and calls its services."""

    def __init__(self):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        from mail_msgs.msg import ActionChunk, ControllerStatus, PolicyStatus
        from mail_policy_node.nodes.sim_world_node import EPISODE_QOS
        from mail_policy_node.spec import TOPIC_EPISODE

        super().__init__("mail_closed_loop")
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.events, self.chunks, self.commands = [], [], []
        self.chunk_ages = []  # per chunk: arrival here minus its stamp [s] (parallel to chunks)
        self.world_clock = None  # the newest /clock (the sim profile's world publishes it): ages count on it
        self.policy_status = self.controller_status = None
        self.node.create_subscription(String, TOPIC_EPISODE,
                                      lambda m: self.events.append(json.loads(m.data)), EPISODE_QOS)
        self.node.create_subscription(ActionChunk, "/mail/action_chunk", self._on_chunk, reliable)
        self.node.create_subscription(JointState, "/mail/action_command",
                                      self._on_command, 100)
        self.node.create_subscription(PolicyStatus, "/mail/policy_status",
                                      lambda m: setattr(self, "policy_status", m), reliable)
        self.node.create_subscription(ControllerStatus, "/mail/controller_status",
                                      lambda m: setattr(self, "controller_status", m), 10)
        self.node.create_subscription(Clock, "/clock", self._on_clock, 10)
        self.reset_client = self.node.create_client(Trigger, "/policy_node/reset_episode")
        self._trigger = Trigger
        self.start()

    def _on_clock(self, m) -> None:
        self.world_clock = m.clock.sec + 1e-9 * m.clock.nanosec

    def _on_chunk(self, m) -> None:
        now = time.time() if self.world_clock is None else self.world_clock
        self.chunk_ages.append(now - (m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec))
        self.chunks.append(m.sequence)

    def _on_command(self, m) -> None:
        stamp = m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec
        self.commands.append((m.position[:7], m.velocity[:7], stamp))

    def reset_policy(self, timeout: float = 30.0) -> bool:
        if not self.reset_client.wait_for_service(timeout_sec=timeout):
            return False
        future = self.reset_client.call_async(self._trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        return bool(future.done() and future.result().success)


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_closed_loop(checkpoint_root: str, checkpoint: str, task: str = "reach", seeds=(0, 1, 2),
                    image_size: int = 128, log=print, echo: bool = False, overrides: dict | None = None,
                    keep_going: bool = False) -> ClosedLoopReport:
    """``overrides``: node name -> parameters over the sim profile's (e.g. policy_node.execution_horizon,
    sim_world.episode_timeout). ``keep_going``: an episode that cannot run to its end (a node died, the
    world never got ready) is recorded with its error and the next seed runs; otherwise it raises."""
    from dataclasses import replace

    from mail_bringup.graph import profile
    from mail_bringup.up import Supervisor
    from mail_policy_node.control.params import controller_setup

    env, host = private_sim_graph()  # the observer in this process joins the same private graph
    cam = {"width": image_size, "height": image_size}
    params = {"policy_node": {"checkpoint_root": os.path.abspath(checkpoint_root), "checkpoint": checkpoint,
                              "task": task},  # a multi-task checkpoint's goal (a single-task one ignores it)
              "camera_agentview": cam, "camera_wrist": cam,
              "franka_controller": {"robot_ip": host, "auto_enable": True}}
    for node, values in (overrides or {}).items():
        params[node] = {**values, **params.get(node, {})}  # what this run needs (checkpoint, address) wins
    base = profile("sim", params)
    import yaml

    ctrl_params = yaml.safe_load(base.params_file.read_text())["franka_controller"]["ros__parameters"]
    limits = controller_setup(ctrl_params).controller.safety.limits  # what the node's safety filter enforces
    persistent = base.only("policy_node", "camera_agentview", "camera_wrist")
    report = ClosedLoopReport(task, checkpoint)
    obs = _Observer()
    stack = Supervisor(persistent, env=env, echo=echo)
    stack.start()
    try:
        wait_until(lambda: obs.policy_status is not None, 120, "the policy node")
        if obs.policy_status.state == 3:
            raise RuntimeError(f"policy node refused the checkpoint: {obs.policy_status.reason}")
        for seed in seeds:
            world = base.only("sim_world", "franka_controller")
            world = replace(world, nodes=tuple(_with(n, seed=seed, task=task, hostname=host) if n.name == "sim_world"
                                               else n for n in world.nodes))
            try:
                report.episodes.append(_episode(obs, world, env, seed, limits, ctrl_params["control_rate_hz"],
                                                log, echo, stack))
            except (RuntimeError, TimeoutError) as e:
                if not keep_going:
                    raise
                log(f"[demo]   episode seed {seed}: error: {e}")
                report.episodes.append(EpisodeResult.errored(seed, str(e)))
        s = obs.policy_status
        report.latency_p50_ms, report.latency_p99_ms, report.inference_p50_ms = \
            s.latency_p50_ms, s.latency_p99_ms, s.inference_p50_ms
        report.controller_jitter_p99_ms = max(e.cycle_jitter_p99_ms for e in report.episodes)
        report.policy_ticks, report.policy_ticks_overrun = int(s.ticks), int(s.ticks_overrun)
        # each episode's world has a controller of its own
        report.controller_cycles = sum(e.cycles for e in report.episodes)
        report.controller_cycles_overrun = sum(e.cycles_overrun for e in report.episodes)
        report.on_world_clock = obs.world_clock is not None
    finally:
        stack.stop()
        obs.close()
    return report


def _with(node, **params):
    from dataclasses import replace

    return replace(node, parameters={**node.parameters, **params})


def _episode(obs, world, env, seed, limits, period_hz, log, echo, stack) -> EpisodeResult:
    from mail_bringup.up import Supervisor

    n_events = len(obs.events)
    sup = Supervisor(world, env=env, echo=echo, max_restarts=0)
    sup.start()
    try:
        wait_until(lambda: any(e["event"] == "ready" and e["seed"] == seed for e in obs.events[n_events:]), 120,
                   f"simulated world ready (seed {seed})")
        if not obs.reset_policy():
            raise RuntimeError("policy reset service did not answer")
        c0, k0 = len(obs.chunks), len(obs.commands)

        def ended():
            sup.poll()
            stack.poll()
            if sup.failed:
                raise RuntimeError(f"episode {seed}: {sup.failed}")
            return any(e["event"] == "end" and e["seed"] == seed for e in obs.events[n_events:])

        wait_until(ended, 300, f"episode end (seed {seed})")
        end = [e for e in obs.events[n_events:] if e["event"] == "end"][-1]
        if end.get("reason"):
            ps = obs.policy_status
            log(f"[demo]   episode seed {seed}: {end['reason']}; policy: state {ps.state} {ps.reason!r}, "
                f"drops {dict(zip(ps.drop_causes, ps.drop_counts))}")
        cs = obs.controller_status
        sent = obs.commands[k0:]
        q = np.array([c[0] for c in sent], float).reshape(-1, 7)
        dq = np.array([c[1] for c in sent], float).reshape(-1, 7)
        ages = 1e3 * np.array(obs.chunk_ages[c0:], float)
        ddq = command_accelerations(dq, np.array([c[2] for c in sent], float), period_hz)
        result = EpisodeResult(seed=seed, success=bool(end["success"]), duration_s=float(end.get("duration", 0.0)),
                               chunks=len(obs.chunks) - c0,
                               max_velocity_ratio=float(np.max(np.abs(dq) / limits.dq_max, initial=0.0)),
                               max_acceleration_ratio=float(np.max(np.abs(ddq) / limits.ddq_max, initial=0.0)),
                               position_violations=int(np.count_nonzero(np.any((q < limits.q_min - 1e-9) |
                                                                               (q > limits.q_max + 1e-9), axis=1))),
                               limit_hits=int(cs.limit_hits) if cs else 0,
                               watchdog_trips=int(cs.watchdog_trips) if cs else 0,
                               chunks_rejected=int(cs.chunks_rejected) if cs else 0,
                               start_distance=end.get("start_distance"), final_distance=end.get("final_distance"),
                               min_distance=end.get("min_distance"),
                               cycle_jitter_p99_ms=float(cs.cycle_jitter_p99_ms) if cs else 0.0,
                               cycles=int(cs.cycles) if cs else 0, cycles_overrun=int(cs.cycles_overrun) if cs else 0,
                               limits=dict(zip(cs.limit_names, map(int, cs.limit_counts))) if cs else {},
                               failed=bool(end.get("failed", False)), reason=end.get("reason") or "",
                               sim_duration_s=end.get("sim_duration"), timeout_s=end.get("timeout"),
                               rejections=dict(zip(cs.rejection_names, map(int, cs.rejection_counts))) if cs else {},
                               actions_dropped_stale=int(cs.actions_dropped_stale) if cs else 0,
                               chunk_age_p50_ms=float(np.percentile(ages, 50)) if len(ages) else None,
                               chunk_age_p99_ms=float(np.percentile(ages, 99)) if len(ages) else None,
                               controller_error=cs.reason if cs and cs.mode == cs.MODE_ERROR else "")
        dist = (f", goal distance {result.start_distance:.3f} -> {result.final_distance:.3f} m"
                if result.start_distance is not None and result.final_distance is not None else "")
        log(f"[demo]   episode seed {seed}: {'success' if result.success else 'failure'} in {result.duration_s} s, "
            f"{result.chunks} chunks, max |dq|/limit {result.max_velocity_ratio:.2f}{dist}")
        return result
    finally:
        sup.stop()
