"""Policy node: synchronised camera frames and joint state in, mail_msgs/ActionChunk out.

A thin adapter over runtime.PolicyRuntime (synchroniser + streaming InferenceEngine). The control
tick runs in a thread of its own, at `rate_hz` or (rate_hz 0) whenever a frame arrives, so it can use
a set as soon as it is complete. The camera and joint-state subscriptions live on a companion node
(`<name>_inputs`) with its own single-threaded executor thread; their callbacks only store messages.
Setting the `checkpoint` parameter loads, validates and warms up the new checkpoint in the parameter
callback, which blocks only this node's executor: inputs keep flowing, the old policy keeps ticking
and the status keeps coming (its timer is on the companion node; a LOADING status naming the
checkpoint goes out as the load starts); the swap happens at the next chunk boundary. A refused
checkpoint rejects the parameter change with the reason, and nothing else changes.

With `use_sim_time` (the `sim` profile) the runtime's clock (input staleness, latency) and the tick rate
are the simulated world's /clock, which also reaches this node through the companion.

Why single-threaded executors and no executor timer for the tick: rclpy's MultiThreadedExecutor burnt
most of a core on its own wake-ups (78 % for 100 Hz joint states + 20 Hz images, see nodes.run), and
the GIL it held made inference 4x slower than the same engine outside the node.
"""

from __future__ import annotations

import os
import threading
import time

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from mail_msgs.msg import ActionChunk as ActionChunkMsg
from mail_msgs.msg import PolicyStatus
from mail_policy_node.checkpoint_limits import CheckpointError, short
from mail_policy_node.control.chunks import not_for_robot
from mail_policy_node.engine.engine import EngineConfig
from mail_policy_node.nodes import Cadence, NodeClock, run, topic_remaps
from mail_policy_node.nodes.diagnostics import ERROR, OK, WARN, Diagnostics
from mail_policy_node.nodes.parameters import declare_table
from mail_policy_node.nodes.qos import STATUS_QOS
from mail_policy_node.nodes.ros_convert import chunk_to_msg, from_time, to_duration, to_time
from mail_policy_node.runtime import POLICY_PARAMETERS, LoadedPolicy, PolicyRuntime, RuntimeConfig, load_policy
from mail_policy_node.spec import (ROBOT_ACTION_SPACES, TOPIC_ACTION_CHUNK, TOPIC_JOINT_STATES, TOPIC_POLICY_STATUS,
                                   camera_image_topic, relative)

TIME_EVENT_CAUSES = ("sync_backward_stamp", "sync_time_base_restart")  # drop causes of PolicyStatus
TIME_EVENT_LOG_S = 5.0
STATE_NAMES = {PolicyStatus.STATE_IDLE: "idle", PolicyStatus.STATE_RUNNING: "running",
               PolicyStatus.STATE_LOADING: "loading", PolicyStatus.STATE_ERROR: "error",
               PolicyStatus.STATE_PAUSED: "paused"}


class PolicyNode(Node):
    def __init__(self):
        super().__init__("policy_node")
        self.clock = NodeClock(self)  # with use_sim_time: the simulated world's (stamps, staleness, the tick rate)
        self.cadence = Cadence()  # the tick loop's ticks and overruns (PolicyStatus)
        p = declare_table(self, POLICY_PARAMETERS)
        self.root = p["checkpoint_root"]
        self.task = p["task"]  # what a multi-task checkpoint is asked for (runtime.load_policy)
        self.runtime_config = RuntimeConfig(rate_hz=p["rate_hz"], execution_horizon=p["execution_horizon"],
                                            sync_tolerance=p["sync_tolerance"], max_age=p["max_age"],
                                            failed_chunks=p["failed_chunks"])
        self._restoring: str | None = None  # the checkpoint parameter set back after an undone swap
        self.mirror = p["publish_trajectory"]
        if p["cpu_threads"] > 0:
            import torch

            torch.set_num_threads(p["cpu_threads"])
        self.engine_config = EngineConfig(history=p["history_mode"] or None, device=p["device"],
                                          sampler=p["sampler"] or None, real_time_chunking=p["real_time_chunking"])
        self.state, self.reason = PolicyStatus.STATE_IDLE, "no checkpoint set"
        self.runtime: PolicyRuntime | None = None
        self._loading: str | None = None  # the checkpoint being loaded, validated and warmed up
        self._status_lock = threading.Lock()  # status goes out from the companion's timer and from a load
        self._logged_causes: set[str] = set()  # each drop cause is logged once, then only counted
        # ...except stamps going backwards (a clock step, a camera reset): logged again when they recur,
        # at most every TIME_EVENT_LOG_S seconds
        self._time_counts, self._time_logged_at = (0, 0), -float("inf")

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.chunk_pub = self.create_publisher(ActionChunkMsg, relative(TOPIC_ACTION_CHUNK), reliable)
        self.status_pub = self.create_publisher(PolicyStatus, relative(TOPIC_POLICY_STATUS), STATUS_QOS)
        self.traj_pub = (self.create_publisher(JointTrajectory, relative(TOPIC_ACTION_CHUNK) + "_trajectory", 10)
                         if self.mirror else None)
        # Inputs keep flowing while a checkpoint loads in this node's parameter callback. The
        # companion takes this process's topic remappings but not its node name.
        self.inputs = Node(f"{self.get_name()}_inputs", namespace=self.get_namespace(), context=self.context,
                           cli_args=topic_remaps(), use_global_arguments=False, start_parameter_services=False,
                           enable_rosout=False)
        self.companion_nodes = (self.inputs,)
        if self.clock.sim:
            # /clock through the companion too: a load blocks this node's executor, and the clock the running
            # policy judges its inputs by must not stop with it (active first: attaching an inactive source
            # would switch this node's clock back to the system's)
            from rclpy.time_source import TimeSource

            self._clock_feed = TimeSource(node=self.inputs)
            self._clock_feed.ros_time_is_active = True
            self._clock_feed.attach_clock(self.get_clock())
        self._subscribed: set[str] = set()
        self.create_service(Trigger, "~/reset_episode", self.on_reset)
        self.create_service(Trigger, "~/pause", self.on_pause)
        self.create_service(Trigger, "~/resume", self.on_resume)
        self.diagnostics = Diagnostics(self)
        self.inputs.create_timer(0.5, self.publish_status)  # not on this node: a load blocks its executor
        self._stop = threading.Event()
        self._frame_arrived = threading.Event()  # rate_hz 0: wakes the tick thread
        self._ticker = threading.Thread(target=self._tick_loop, name="tick", daemon=True)
        self._ticker.start()

        name = self.get_parameter("checkpoint").value
        if name:
            try:
                self._start(self._load(name))
            except Exception as exc:  # noqa: BLE001 - the node stays up so a valid checkpoint can be set
                self.state, self.reason = PolicyStatus.STATE_ERROR, f"checkpoint {short(name)} refused: {exc}"
                self.get_logger().error(self.reason)
        self.add_on_set_parameters_callback(self.on_set_parameters)

    # ---- checkpoints ------------------------------------------------------------------------------
    def _load(self, name: str) -> LoadedPolicy:
        """Load, validate and warm up a checkpoint; the status says LOADING (with its name) meanwhile."""
        self.get_logger().info(f"loading checkpoint {short(name)} from {self.root}")
        self._loading = name
        self.publish_status()
        try:
            return self._load_in_thread(name)
        finally:
            self._loading = None

    def _load_in_thread(self, name: str) -> LoadedPolicy:
        """In a thread of lower OS priority, so the tick thread keeps its pace while a swap candidate
        loads (at equal priority a swap stretched the chunk gap past the controller's watchdog timeout on
        a 2-core machine)."""
        result: dict = {}

        def work():
            try:
                me = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, me, min(19, os.getpriority(os.PRIO_PROCESS, me) + 10))
            except OSError:
                pass
            try:
                loaded = load_policy(self.root, name, self.engine_config, self.task)
                if loaded.spec.action_space not in ROBOT_ACTION_SPACES:  # a benchmark's policy: no arm runs it
                    raise CheckpointError(not_for_robot(loaded.spec.action_space))
                result["loaded"] = loaded
            except Exception as exc:  # noqa: BLE001 - handed to the caller, which refuses the checkpoint with it
                result["error"] = exc

        loader = threading.Thread(target=work, name="checkpoint-load")
        loader.start()
        loader.join()
        if "error" in result:
            raise result["error"]
        return result["loaded"]

    def _start(self, loaded: LoadedPolicy) -> None:
        self.runtime = PolicyRuntime(loaded, self.runtime_config, clock=self.clock.wall)
        self._subscribe(loaded)
        self.state, self.reason = PolicyStatus.STATE_IDLE, "waiting for every input stream"
        self.get_logger().info(f"running {loaded.name} ({loaded.policy_id}), {loaded.engine.describe()}")

    def _subscribe(self, loaded: LoadedPolicy) -> None:
        for cam in loaded.spec.camera_names:
            if cam not in self._subscribed:
                self.inputs.create_subscription(Image, relative(camera_image_topic(cam)),
                                                lambda m, c=cam: self.on_image(c, m), qos_profile_sensor_data)
                self._subscribed.add(cam)
        if loaded.spec.use_joint_state and "joints" not in self._subscribed:
            self.inputs.create_subscription(JointState, relative(TOPIC_JOINT_STATES), self.on_joint_state,
                                            qos_profile_sensor_data)
            self._subscribed.add("joints")

    def on_set_parameters(self, params) -> SetParametersResult:
        # the task first: a checkpoint set with it loads for that task
        for p in sorted(params, key=lambda p: p.name != "task"):
            if p.name == "task":
                refused = self._set_task(p.value)
                if refused:
                    self.get_logger().warn(refused)
                    return SetParametersResult(successful=False, reason=refused)
                continue
            if p.name != "checkpoint":
                continue
            if p.value == self._restoring:  # set back to the checkpoint that runs again: nothing to load
                self._restoring = None
                continue
            try:
                loaded = self._load(p.value)
            except Exception as exc:  # noqa: BLE001 - any load failure refuses the checkpoint; the old one runs on
                reason = f"checkpoint {short(p.value)} refused: {exc}"
                self.get_logger().warn(reason)
                return SetParametersResult(successful=False, reason=reason)
            if self.runtime is None:
                self._start(loaded)
                continue
            problems = self.runtime.incompatibilities(loaded)
            if problems:
                reason = f"checkpoint {short(p.value)} incompatible with the running one: " + "; ".join(problems)
                self.get_logger().warn(reason)
                return SetParametersResult(successful=False, reason=reason)
            self.runtime.request_swap(loaded)
            self.get_logger().info(f"checkpoint {short(p.value)} ({loaded.policy_id}) swaps in at the next "
                                   "chunk boundary")
        return SetParametersResult(successful=True)

    def _set_task(self, task: str) -> str | None:
        """The `task` parameter set at run time: the running checkpoint asked for it from a new episode (its
        chunks then say the task, and the controller waits for an enable). Where no checkpoint runs because
        the one set needs a task, it loads for this one. Returns why it is refused (nothing changes then)."""
        rt, name = self.runtime, self.get_parameter("checkpoint").value
        if rt is None and name:
            old, self.task = self.task, task  # _load reads it
            try:
                self._start(self._load(name))
            except Exception as exc:  # noqa: BLE001 - refused, as a checkpoint is: the node stays as it was
                self.task = old
                return f"task {task!r} refused: checkpoint {short(name)} does not load for it: {exc}"
        elif rt is not None and task != rt.policy.task:
            if rt.swapping:
                return f"task {task!r} refused: a checkpoint swap is under way; set the task once it runs"
            try:
                rt.set_task(task)
            except CheckpointError as exc:
                return f"task {task!r} refused: {exc}"
            if rt.policy.task:  # a single-task checkpoint does not use it
                self.get_logger().info(f"task {task!r}: a new episode; the controller takes its chunks after an "
                                       "enable")
        self.task = task
        return None

    # ---- inputs -----------------------------------------------------------------------------------
    def on_image(self, camera: str, msg: Image) -> None:
        if self.runtime is not None:
            self.runtime.add_image(camera, from_time(msg.header.stamp), msg)
            self._frame_arrived.set()

    def on_joint_state(self, msg: JointState) -> None:
        if self.runtime is not None:
            self.runtime.add_joint_state(from_time(msg.header.stamp), msg)

    # ---- control tick -----------------------------------------------------------------------------
    def _tick_loop(self) -> None:
        if self.runtime_config.rate_hz == 0:  # a tick per arriving frame; the runtime skips incomplete sets
            while not self._stop.is_set():
                if self._frame_arrived.wait(0.1):
                    self._frame_arrived.clear()
                    self.cadence.cycles += 1  # no period to overrun
                    self.tick()
            return
        period, clock = 1.0 / self.runtime_config.rate_hz, self.clock
        next_t = clock.monotonic()
        while not self._stop.is_set():
            self.tick()
            next_t = clock.wait_for_cycle(next_t + period, self._stop, max_wall=1.0, cadence=self.cadence)

    def tick(self) -> None:
        rt = self.runtime
        if rt is None:
            return
        try:
            chunk = rt.tick()
            for _failed, restored in rt.take_reverts():
                self.get_logger().error(f"swap undone: {rt.last_revert}")
                self._restoring = restored
                self.set_parameters([Parameter("checkpoint", Parameter.Type.STRING, restored)])
            self._publish(rt, chunk)
        except Exception as exc:  # noqa: BLE001 - a failing tick must not end the tick thread; shutdown races end here too
            if not self._stop.is_set():
                self.get_logger().error(f"tick failed: {exc!r}", throttle_duration_sec=5.0)

    def _publish(self, rt, chunk) -> None:
        if rt.error:
            self.state, self.reason = PolicyStatus.STATE_ERROR, rt.error
        elif rt.paused:
            self.state, self.reason = PolicyStatus.STATE_PAUSED, "paused by service"
        elif rt.sync.missing():
            self.state, self.reason = PolicyStatus.STATE_IDLE, f"waiting for {', '.join(rt.sync.missing())}"
        elif rt.chunks:
            self.state, self.reason = PolicyStatus.STATE_RUNNING, rt.last_revert or ""
        if chunk is None:
            return
        msg = chunk_to_msg(chunk, checkpoint=rt.policy.name, inference_time=rt.inference[-1])
        self.chunk_pub.publish(msg)
        if self.traj_pub is not None:
            self.traj_pub.publish(trajectory_of(chunk))

    def on_reset(self, request, response):
        if self.runtime is not None:
            self.runtime.reset_episode()
        response.success, response.message = self.runtime is not None, "episode reset"
        return response

    def on_pause(self, request, response):
        return self._set_paused(True, response)

    def on_resume(self, request, response):
        return self._set_paused(False, response)

    def _set_paused(self, paused: bool, response):
        if self.runtime is not None:
            self.runtime.paused = paused
        response.success, response.message = self.runtime is not None, "paused" if paused else "resumed"
        return response

    # ---- status -----------------------------------------------------------------------------------
    def publish_status(self) -> None:
        with self._status_lock:
            m = self._status()
            self.status_pub.publish(m)
        # running with a reason (a swap undone): a warning
        level = {PolicyStatus.STATE_RUNNING: WARN if m.reason else OK, PolicyStatus.STATE_LOADING: OK,
                 PolicyStatus.STATE_ERROR: ERROR}
        self.diagnostics.update(level.get(m.state, WARN), f"{STATE_NAMES.get(m.state, m.state)}: {m.reason}", m)

    def _status(self) -> PolicyStatus:
        m = PolicyStatus()
        m.header.stamp = self.get_clock().now().to_msg()
        m.state, m.reason = self.state, self.reason
        m.chunk_subscribers = self.chunk_pub.get_subscription_count()
        if self.runtime is not None:
            s = self.runtime.status()
            if self.runtime.swap_pending:
                m.state, m.reason = PolicyStatus.STATE_LOADING, "new checkpoint swaps in at the next chunk boundary"
            m.policy_id, m.checkpoint, m.history_mode, m.device = (s["policy_id"], s["checkpoint"], s["history"],
                                                                   s["device"])
            m.task = s["task"]
            m.observations_received, m.chunks_published, m.episode_steps = (s["observations"], s["chunks"],
                                                                            s["episode_steps"])
            for cause in set(s["drops"]) - self._logged_causes - set(TIME_EVENT_CAUSES):
                self._logged_causes.add(cause)
                self.get_logger().warn(f"dropping inputs: {cause} (counted in PolicyStatus, logged once)")
            self._log_time_events(s)
            m.drop_causes = list(s["drops"])
            m.drop_counts = [int(v) for v in s["drops"].values()]
            m.observations_dropped = int(sum(m.drop_counts))
            m.rate_hz = float(s["rate_hz"])
            m.latency_p50_ms, m.latency_p99_ms = float(s["latency_p50_ms"]), float(s["latency_p99_ms"])
            m.inference_p50_ms, m.inference_p99_ms = float(s["inference_p50_ms"]), float(s["inference_p99_ms"])
        m.ticks, m.ticks_overrun = self.cadence.cycles, self.cadence.overruns
        loading = self._loading
        if loading is not None:
            m.state = PolicyStatus.STATE_LOADING
            m.reason = (f"loading checkpoint {short(loading)}"
                        + ("; the running one keeps going" if self.runtime else ""))
        return m

    def _log_time_events(self, s: dict) -> None:
        """Backward stamps and time base restarts, logged when their counts change, throttled (a status
        goes out every 0.5 s, so a change held back by the throttle is logged at a later one)."""
        counts = tuple(int(s["drops"].get(c, 0)) for c in TIME_EVENT_CAUSES)
        now = time.monotonic()
        if counts == self._time_counts or now - self._time_logged_at < TIME_EVENT_LOG_S:
            return
        self._time_counts, self._time_logged_at = counts, now
        self.get_logger().warn(
            f"input stamps went backwards: {s['time_event']}; so far {counts[0]} backward stamps, {counts[1]} "
            f"time base restarts, {s['time_base_restarts']} policy history restarts (counted in PolicyStatus "
            f"as {', '.join(TIME_EVENT_CAUSES)})")

    def destroy_node(self):
        self._stop.set()
        self._ticker.join(timeout=2.0)
        self.inputs.destroy_node()
        return super().destroy_node()


def trajectory_of(chunk) -> JointTrajectory:
    """The chunk as a JointTrajectory (for visualisation tools): one point per action."""
    t = JointTrajectory()
    t.header.stamp = to_time(chunk.stamp)
    t.joint_names = list(chunk.names)
    for i, row in enumerate(chunk.actions):
        t.points.append(JointTrajectoryPoint(positions=[float(x) for x in row],
                                             time_from_start=to_duration(chunk.start_offset + i * chunk.dt)))
    return t


def main(args=None):
    run(PolicyNode, args)


if __name__ == "__main__":
    main()
