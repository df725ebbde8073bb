"""Franka controller node: executes ActionChunks on the arm through franky, safely.

A thin adapter over control.ArmController (scheduler, blending, SafetyFilter, watchdog) and
control.FrankyArm. The control loop runs in its own thread at `control_rate_hz` (not an executor
timer, whose jitter would reach the arm); message callbacks and services only hand data to the core
under a lock. The node also publishes the arm's joint state (it owns the robot connection: libfranka
allows one), the command after the safety filter, and ControllerStatus.

Clocks (`NodeClock`): the host's monotonic clock for the loop, the watchdog and the chunk schedule, the
system clock for stamps; with `use_sim_time` (the `sim` profile, a simulated arm on loopback only) all of
them are the simulated world's /clock, so chunks run at the simulated arm's pace. If that clock stops, the
loop still cycles every ARM_CLOCK_WAIT_CYCLES periods of the host's clock, commanding the plan's target at
the stopped time.

Safe by default: without parameters it is a dry run with no robot address (a stand-in arm echoes the
commands). A live arm needs `robot_ip` and `dry_run: false`; a dry run with `robot_ip` connects and
reads the real arm without moving it. Safety limits are parameters read at start-up only (read-only).

Who may drive the arm: one publisher of chunks (with two, chunks are refused and the arm holds), and
after an enable only the policy of the first chunk accepted. Errors: ERROR stops the motion; `~/recover`
clears the robot's errors (mode DISABLED), `~/enable` resumes. The e-stop (`/mail/estop`, a volatile or
transient-local Bool) is latched in `estop_latch_file` when that is set, so a restarted controller
starts held. If the control loop dies, the node says so in its status and exits with code 1.

A managed (lifecycle) node: configure connects to the arm and starts the control loop (joint states
flow, nothing moves), activate allows `~/enable`, deactivate holds the arm to rest and disables it,
cleanup stops the loop and lets the robot go. With `autostart` (the default, what the profiles use) it
configures and activates itself at start; a failed connection then ends the process (exit 2).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from mail_msgs.msg import ActionChunk as ActionChunkMsg
from mail_msgs.msg import ControllerStatus
from mail_policy_node.control.chunks import ChunkRejection
from mail_policy_node.control.controller import ArmController, Mode
from mail_policy_node.control.franky_arm import ArmClockPacer, FrankyArm, run_cycle
from mail_policy_node.control.params import CONTROLLER_PARAMETERS, controller_setup, is_loopback
from mail_policy_node.control.safety import CommandState
from mail_policy_node.data.sync import ClockMapper
from mail_policy_node.nodes import Cadence, NodeClock, run, shut_down
from mail_policy_node.nodes.diagnostics import ERROR, OK, WARN, Diagnostics
from mail_policy_node.nodes.parameters import declare_table
from mail_policy_node.nodes.qos import STATUS_QOS
from mail_policy_node.nodes.ros_convert import chunk_from_msg, to_time
from mail_policy_node.spec import (FR3_FINGER_NAMES, FR3_JOINT_NAMES, GRIPPER_NAME, TOPIC_ACTION_CHUNK,
                                   TOPIC_ACTION_COMMAND, TOPIC_CONTROLLER_STATUS, TOPIC_ESTOP, TOPIC_JOINT_STATES,
                                   relative)

STALL_CYCLES = 20  # a control loop silent this many periods is reported as stalled
ARM_CLOCK_WAIT_CYCLES = 10  # a cycle waits at most this many periods for an arm whose clock runs slow
ROBOT_CLOCK_RESET_S = 1.0  # the robot's clock this far behind the newest state published: it restarted


class FrankaControllerNode(LifecycleNode):
    def __init__(self):
        super().__init__("franka_controller")
        p = declare_table(self, CONTROLLER_PARAMETERS)
        # the simulated world's clock (use_sim_time) only for a simulated arm: a real one keeps real time,
        # and its watchdog must never wait for a /clock that stopped
        self.clock = NodeClock(self, refuse="" if p["robot_ip"] and is_loopback(p["robot_ip"]) else
                               f"the controller follows a simulated clock only for a simulated arm on loopback "
                               f"(franky-sim, the FR3 emulator), not for robot_ip {p['robot_ip']!r}")
        self.cadence = Cadence()  # the control loop's cycles and overruns (ControllerStatus)
        setup = controller_setup(p)
        budget, config = setup.budget, setup.controller
        period = config.safety.cycle_period
        self.dry_run = p["dry_run"]
        self.period = period
        self.auto_enable = p["auto_enable"]
        self.ctrl = ArmController(config, clock=self.clock.monotonic, wall_clock=self.clock.wall)
        self.arm = FrankyArm(setup.arm, clock=self.clock.monotonic)
        self.pacer = ArmClockPacer(period, ARM_CLOCK_WAIT_CYCLES * period)
        self.lock = threading.Lock()
        self.clock_map = ClockMapper()
        self._last_joint_time = float("-inf")  # robot time of the newest joint state published
        self.joint_every = max(1, round(p["control_rate_hz"] / p["joint_state_rate_hz"]))
        self.exit_code = 0
        self._loop_alive = True
        self._last_cycle = time.monotonic()
        self._was_error = False
        self._estop_file = Path(os.path.expanduser(p["estop_latch_file"])) if p["estop_latch_file"] else None
        if self._estop_file is not None and self._estop_file.exists():
            self.ctrl.estop(True)
            self.get_logger().error(f"E-STOP latched before this start ({self._estop_file}): publish false on "
                                    f"{TOPIC_ESTOP} to release, then call ~/enable")

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        # reliable, as joint_state_broadcaster publishes it: matches reliable and best-effort subscribers
        self.joint_pub = self.create_publisher(JointState, relative(TOPIC_JOINT_STATES), reliable)
        self.command_pub = self.create_publisher(JointState, relative(TOPIC_ACTION_COMMAND), 10)
        self.status_pub = self.create_publisher(ControllerStatus, relative(TOPIC_CONTROLLER_STATUS), STATUS_QOS)
        self.chunk_topic = self.resolve_topic_name(relative(TOPIC_ACTION_CHUNK))  # in this node's namespace
        self.create_subscription(ActionChunkMsg, self.chunk_topic, self.on_chunk, reliable)
        # two e-stop subscriptions: a volatile one matches any publisher, a transient-local one also gets
        # the last value a transient-local publisher sent before this node started
        self.create_subscription(Bool, relative(TOPIC_ESTOP), self.on_estop, reliable)
        self.create_subscription(Bool, relative(TOPIC_ESTOP), self.on_estop, QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.create_service(Trigger, "~/enable", self.on_enable)
        self.create_service(Trigger, "~/disable", self.on_disable)
        self.create_service(Trigger, "~/recover", self.on_recover)
        self.create_timer(1.0 / p["status_rate_hz"], self.publish_status)
        self.diagnostics = Diagnostics(self, hardware_id=p["robot_ip"] or "no robot")
        self._diagnosed_mode: int | None = None

        where = p["robot_ip"] or "no robot (a stand-in arm echoes the commands)"
        self.get_logger().info(f"arm: {where}" + (", dry run: nothing moves" if self.dry_run else ", live")
                               + f"; caps {budget.caps.dq_max.round(3).tolist()} rad/s, factor "
                               f"{p['relative_dynamics_factor']}")
        self._dry_run_start = np.array(p["dry_run_start"], dtype=float)
        self._stop = threading.Event()
        self._loop: threading.Thread | None = None
        self.lifecycle = "unconfigured"  # our view of the lifecycle state: what the services and status say
        self._configure_error = ""
        if p["autostart"]:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise ConnectionError(self._configure_error or "configure failed")
            self.trigger_activate()
        else:
            self.get_logger().info("unconfigured: waiting for the lifecycle transition configure")

    # ---- lifecycle: configure = connect and run the loop, activate = enable allowed, deactivate = hold ----
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self.arm.connect(timeout=20.0)
        except Exception as exc:  # noqa: BLE001 - the transition fails; the node stays unconfigured and says why
            self._configure_error = str(exc)
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
            self.arm.close()
            return TransitionCallbackReturn.FAILURE
        if self.arm.startup_error:
            with self.lock:
                self.ctrl.set_error(self.arm.startup_error)
        if self.arm.robot is None:  # the stand-in arm echoes commands; it starts at this joint configuration
            self.arm.send(CommandState.at_rest(self._dry_run_start))
        self._stop.clear()
        self._last_cycle = time.monotonic()
        self._loop = threading.Thread(target=self.control_loop, name="control", daemon=True)
        self._loop.start()
        self.lifecycle = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self.lifecycle = "active"
        self.get_logger().info("active: ~/enable lets the policy drive")
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        with self.lock:
            self.lifecycle = "inactive"
            self.auto_enable = False
            self.ctrl.disable()  # holds, then disabled at rest
        self.get_logger().info("inactive: holding, then disabled at rest")
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    on_shutdown = on_cleanup  # shutting down from any state lets go the same way

    def _release(self) -> None:
        """Stop the control loop and let the robot go (franky stops a running motion first)."""
        with self.lock:
            self.lifecycle = "unconfigured"
            self.ctrl.disable()
        self._stop.set()
        if self._loop is not None and self._loop.is_alive() and self._loop is not threading.current_thread():
            self._loop.join(timeout=2.0)
        self._loop = None
        self.arm.close()

    # ---- callbacks: hand data to the core --------------------------------------------------------
    def on_chunk(self, msg: ActionChunkMsg) -> None:
        chunk = chunk_from_msg(msg)
        sources = self.get_publishers_info_by_topic(self.chunk_topic)
        with self.lock:
            if len(sources) > 1:
                names = sorted(f"{s.node_namespace.rstrip('/')}/{s.node_name}" for s in sources)
                verdict = self.ctrl.reject(ChunkRejection.AMBIGUOUS_SOURCE, f"publishers: {', '.join(names)}")
                self.ctrl.hold(f"{len(sources)} publishers on {self.chunk_topic}: {', '.join(names)}")
            else:
                if self.auto_enable and self.ctrl.mode == Mode.DISABLED and self.lifecycle == "active":
                    # once, on the first chunk (a stale start-up chunk only arms the watchdog); a later
                    # disable, hold, e-stop or error needs the enable service
                    _ok, why = self.ctrl.enable()
                    self.auto_enable = False
                    self.get_logger().info(f"auto enable on first chunk: {why}")
                verdict = self.ctrl.submit_chunk(chunk)
        if not verdict.ok:
            self.get_logger().warn(f"chunk {chunk.sequence} rejected: {verdict.reason.value} {verdict.detail}",
                                   throttle_duration_sec=2.0)

    def on_estop(self, msg: Bool) -> None:
        """True: hold at once and refuse enable; False: release (the arm stays held until ~/enable)."""
        active = bool(msg.data)
        with self.lock:
            changed = active != self.ctrl.estop_active
            self.ctrl.estop(active)
            self.auto_enable = False
        if self._estop_file is not None:
            if active:
                self._estop_file.parent.mkdir(parents=True, exist_ok=True)
                self._estop_file.write_text(f"e-stop at {time.time():.3f}\n")
            else:
                self._estop_file.unlink(missing_ok=True)
        if active:
            self.get_logger().error("E-STOP: holding; publish false to release, then call ~/enable",
                                    throttle_duration_sec=1.0)
        elif changed:
            self.get_logger().info("e-stop released; call ~/enable to resume")

    def on_enable(self, request, response):
        sources = self.get_publishers_info_by_topic(self.chunk_topic)
        if self.lifecycle != "active":
            response.success = False
            response.message = f"the controller is {self.lifecycle}: activate it first (lifecycle transition activate)"
        elif len(sources) > 1:
            response.success = False
            response.message = f"{len(sources)} publishers on {self.chunk_topic}; exactly one may drive the arm"
        else:
            with self.lock:
                self.auto_enable = False
                response.success, response.message = self.ctrl.enable()
        self.get_logger().info(f"enable: {response.message}")
        return response

    def on_disable(self, request, response):
        with self.lock:
            self.auto_enable = False
            self.ctrl.disable()
        response.success, response.message = True, "holding, then disabled at rest"
        return response

    def on_recover(self, request, response):
        """Clear the robot's errors (franky's recover_from_errors): ERROR -> DISABLED. Does not enable."""
        with self.lock:
            try:
                if self.ctrl.mode == Mode.ERROR:
                    self.arm.recover()
                response.success, response.message = self.ctrl.recovered()
            except Exception as exc:  # noqa: BLE001 - the robot refused, or the connection is gone: stay in ERROR
                response.success, response.message = False, f"recovery failed: {type(exc).__name__}: {exc}"
        self.get_logger().info(f"recover: {response.message}")
        return response

    # ---- the control loop -------------------------------------------------------------------------
    def control_loop(self) -> None:
        try:
            self._control_loop()
        except BaseException as exc:  # noqa: BLE001 - the arm must not be left believing it is controlled
            if self._stop.is_set() or not self.context.ok():
                return  # shutting down: publishing after the context ended is not a fault
            self._loop_alive = False
            with self.lock:
                self.ctrl.set_error(f"control loop died: {type(exc).__name__}: {exc}")
            self.get_logger().fatal(f"control loop died: {type(exc).__name__}: {exc}; stopping the arm, exiting")
            try:
                self.arm.stop()
            except Exception:  # noqa: BLE001 - the arm is being given up already; its status says so
                pass
            self.publish_status()
            self.exit_code = 1
            shut_down(self.context)

    def _control_loop(self) -> None:
        clock = self.clock
        while not clock.running():  # a simulated clock that has not started: nothing to time a cycle by
            if self._stop.wait(self.period):
                return
            self._last_cycle = time.monotonic()
        next_t = clock.monotonic()
        cycle = 0
        while not self._stop.is_set():
            with self.lock:
                out = run_cycle(self.ctrl, self.arm)
                error = self.ctrl.mode == Mode.ERROR
                if error and not self._was_error:
                    self._stop_motion()
                self._was_error = error
                transitions = ()
                if self.ctrl.transitions:  # rare: no list built on ordinary cycles
                    transitions = list(self.ctrl.transitions)
                    self.ctrl.transitions.clear()
            self._last_cycle = time.monotonic()
            for mode, reason in transitions:  # one call site per severity: rclpy refuses a mix
                if mode == Mode.ERROR:
                    self.get_logger().error(f"mode ERROR: {reason}")
                else:
                    self.get_logger().info(f"mode {mode.name}: {reason}")
            # the state run_cycle just read: a second read per cycle would query the robot twice
            state = self.arm.last_state if cycle % self.joint_every == 0 else None
            if state is not None:
                self.publish_joint_state(state)
            if out is not None:
                self.publish_command(out, state)
            cycle += 1
            # a simulated clock that stalls holds a cycle at most ARM_CLOCK_WAIT_CYCLES periods: the loop still
            # reads the arm
            next_t = clock.wait_for_cycle(next_t + self.period, self._stop, ARM_CLOCK_WAIT_CYCLES * self.period,
                                          self.cadence)
            if self.arm.robot is not None:
                try:
                    self.pacer.wait(self.arm.arm_time)
                except Exception:  # noqa: BLE001 - a lost arm: the next cycle's state read reports it
                    pass

    def _stop_motion(self) -> None:
        """Entering ERROR: stop whatever franky still runs (a reflex already stopped the arm)."""
        try:
            self.arm.stop()
        except Exception as exc:  # noqa: BLE001 - after an error: a stop that fails too is logged
            self.get_logger().warn(f"stop after error: {exc}")

    def publish_joint_state(self, state) -> None:
        # a state whose robot time did not advance (the simulator's clock stalls under load) was already
        # published: sent again it would carry the same data under an older-or-equal stamp. A clock far
        # behind the last one restarted (a reconnected robot): publishing goes on from the new clock.
        if state.robot_time < self._last_joint_time - ROBOT_CLOCK_RESET_S:
            self.get_logger().warn(f"robot clock went back {self._last_joint_time - state.robot_time:.1f} s "
                                   "(reconnected?): joint state stamps restart from it")
        elif state.robot_time <= self._last_joint_time:
            return
        self._last_joint_time = state.robot_time
        m = JointState()
        m.header.stamp = to_time(self.clock_map.update(state.robot_time, self.clock.wall()))
        m.name = list(FR3_JOINT_NAMES) + list(FR3_FINGER_NAMES)
        # an unknown width (no gripper, a failed read) is NaN, never "closed": the policy drops it
        half = 0.5 * state.gripper_width if state.gripper_width is not None else float("nan")
        m.position = [float(x) for x in state.q] + [half, half]
        m.velocity = [float(x) for x in state.dq] + [0.0, 0.0]
        self.joint_pub.publish(m)

    def publish_command(self, out, state) -> None:
        m = JointState()
        m.header.stamp = to_time(self.clock.wall())
        m.name = list(FR3_JOINT_NAMES) + [GRIPPER_NAME]
        grip = out.command.gripper
        if np.isnan(grip) and state is not None and state.gripper_width is not None:
            grip = state.gripper_width  # no width commanded yet: the Hand stays where it is
        m.position = [float(x) for x in out.command.q] + [float(grip)]
        m.velocity = [float(x) for x in out.command.dq] + [0.0]
        self.command_pub.publish(m)

    def publish_status(self) -> None:
        with self.lock:
            s = self.ctrl.status()
        m = ControllerStatus()
        stamp = self.get_clock().now()
        m.header.stamp = stamp.to_msg()
        m.mode, m.reason, m.dry_run = int(s.mode), s.reason, self.dry_run
        stalled = self._loop is not None and time.monotonic() - self._last_cycle > STALL_CYCLES * self.period
        if self.lifecycle == "unconfigured":
            m.reason = "unconfigured: not connected (lifecycle transition configure connects)"
        if not self._loop_alive or stalled:
            m.mode = int(Mode.ERROR)
            m.reason = s.reason if not self._loop_alive else f"control loop stalled ({s.reason})"
        # the mode's start on the controller's clock, as an age subtracted from the header's time (never after
        # it); a stalled or dead loop's ERROR: as of this status, since when is not known
        now = stamp.nanoseconds * 1e-9
        since = None if not self._loop_alive or stalled else s.mode_since
        m.mode_since = to_time(now if since is None else now - (self.clock.monotonic() - since))
        m.active_policy_id, m.active_sequence, m.active_task = s.active_policy_id, s.active_sequence, s.active_task
        m.chunks_received, m.chunks_rejected = s.chunks_received, s.chunks_rejected
        m.actions_dropped_stale, m.watchdog_trips, m.limit_hits = \
            s.actions_dropped_stale, s.watchdog_trips, s.limit_hits
        m.limit_names = sorted(s.limits)
        m.limit_counts = [int(s.limits[n]) for n in m.limit_names]
        m.rejection_names = sorted(s.rejections)
        m.rejection_counts = [int(s.rejections[n]) for n in m.rejection_names]
        m.commanded_position = [float(x) for x in s.commanded_position]
        m.measured_position = [float(x) for x in s.measured_position]
        m.cycle_jitter_p99_ms = float(s.cycle_jitter_p99_ms)
        m.cycles, m.cycles_overrun = self.cadence.cycles, self.cadence.overruns
        m.chunk_age_p50_ms, m.chunk_age_min_ms = float(s.chunk_age_p50_ms), float(s.chunk_age_min_ms)
        m.estop_active = self.ctrl.estop_active
        self.status_pub.publish(m)
        level = {Mode.HOLDING: WARN, Mode.ERROR: ERROR}.get(Mode(m.mode), OK)
        self.diagnostics.update(level, f"{Mode(m.mode).name.lower()}: {m.reason}", m,
                                force=m.mode != self._diagnosed_mode)  # a change of mode goes out at once
        self._diagnosed_mode = m.mode

    def destroy_node(self):
        self._release()
        return super().destroy_node()


def main(args=None):
    # one executor thread: every callback is short and only takes the core's lock; a second thread
    # made rclpy's MultiThreadedExecutor spin on callbacks blocked behind that lock (a core burnt)
    run(FrankaControllerNode, args)


if __name__ == "__main__":
    main()
