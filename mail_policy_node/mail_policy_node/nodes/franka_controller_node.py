"""Franka controller node: executes ActionChunks on the arm through franky, safely.

A thin adapter over control.ArmController (scheduler, blending, SafetyFilter, watchdog) and
control.FrankyArm. The control loop runs in its own thread at `control_rate_hz` (not an executor
timer, whose jitter would reach the arm); message callbacks and services only hand data to the core
under a lock. The node also publishes the arm's joint state (it owns the robot connection: libfranka
allows one), the command actually sent after the safety filter, and ControllerStatus.

Safety limits are parameters read at start-up only (read-only: they cannot be changed at run time).
"""

from __future__ import annotations

import threading
import time

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from mail_msgs.msg import ActionChunk as ActionChunkMsg
from mail_msgs.msg import ControllerStatus
from mail_policy_node.nodes import run
from mail_policy_node.control.chunks import SchedulerConfig
from mail_policy_node.control.controller import ArmController, ControllerConfig
from mail_policy_node.control.franky_arm import FrankyArm, FrankyArmConfig, check_compatible, run_cycle
from mail_policy_node.control.gripper import GripperConfig
from mail_policy_node.control.limits import fr3_limits
from mail_policy_node.control.safety import CommandState, SafetyConfig
from mail_policy_node.control.watchdog import WatchdogConfig
from mail_policy_node.data.sync import ClockMapper
from mail_policy_node.nodes.ros_convert import chunk_from_msg, to_time
from mail_policy_node.spec import (FR3_FINGER_NAMES, FR3_JOINT_NAMES, GRIPPER_NAME, TOPIC_ACTION_CHUNK,
                                   TOPIC_ACTION_COMMAND, TOPIC_CONTROLLER_STATUS, TOPIC_JOINT_STATES)

READ_ONLY = ParameterDescriptor(read_only=True)


class FrankaControllerNode(Node):
    def __init__(self):
        super().__init__("franka_controller")
        p = self._declare({
            "robot_ip": "172.16.0.2", "dry_run": False, "control_rate_hz": 100.0, "status_rate_hz": 10.0,
            "joint_state_rate_hz": 100.0, "auto_enable": False, "relative_dynamics_factor": 0.6,
            "velocity_scale": 0.5, "acceleration_scale": 0.3, "jerk_scale": 0.1, "position_margin": 0.05,
            "max_joint_step": 0.05, "workspace_min": [0.15, -0.6, 0.05], "workspace_max": [0.85, 0.6, 1.0],
            "watchdog_timeout": 0.5, "blend": "crossfade", "crossfade_duration": 0.1,
            "max_tracking_error": 0.15, "use_gripper": True, "realtime": False,
            "gripper_mode": "binary", "gripper_force": 20.0, "gripper_speed": 0.05, "gripper_close_below": 0.04,
            "dry_run_start": [0.0, -0.3, 0.0, -2.2, 0.0, 1.9, 0.785],
        })
        period = 1.0 / p["control_rate_hz"]
        config = ControllerConfig(
            safety=SafetyConfig(cycle_period=period,
                                limits=fr3_limits(position_margin=p["position_margin"],
                                                  velocity_scale=p["velocity_scale"],
                                                  acceleration_scale=p["acceleration_scale"],
                                                  jerk_scale=p["jerk_scale"]),
                                max_joint_step=p["max_joint_step"], workspace_min=tuple(p["workspace_min"]),
                                workspace_max=tuple(p["workspace_max"])),
            scheduler=SchedulerConfig(names=FR3_JOINT_NAMES + (GRIPPER_NAME,), blend=p["blend"],
                                      crossfade_duration=p["crossfade_duration"]),
            watchdog=WatchdogConfig(timeout=p["watchdog_timeout"]),
            max_tracking_error=p["max_tracking_error"])
        # Dry run lives in the arm adapter: commands flow exactly as on the robot, and the dry-run arm
        # echoes them as its measured state instead of moving anything.
        self.dry_run = p["dry_run"]
        self.period = period
        self.auto_enable = p["auto_enable"]
        self.ctrl = ArmController(config, clock=time.time)
        arm_config = FrankyArmConfig(host=p["robot_ip"], dry_run=p["dry_run"], realtime=p["realtime"],
                                     relative_dynamics_factor=p["relative_dynamics_factor"], use_gripper=p["use_gripper"],
                                     gripper=GripperConfig(mode=p["gripper_mode"], grasp_force=p["gripper_force"],
                                                           speed=p["gripper_speed"],
                                                           close_below=p["gripper_close_below"]))
        problems = check_compatible(arm_config, config.safety)
        if problems:  # franky would clip below the filter's commands: tracking errors, reflexes, stops
            raise ValueError("relative_dynamics_factor is too low for the safety limits (lower velocity_scale / "
                             "acceleration_scale / jerk_scale or raise the factor): " + "; ".join(problems))
        self.arm = FrankyArm(arm_config)
        self.lock = threading.Lock()
        self.clock_map = ClockMapper()
        self._last_joint_time = float("-inf")  # robot time of the newest joint state published
        self.joint_every = max(1, round(p["control_rate_hz"] / p["joint_state_rate_hz"]))

        self.joint_pub = self.create_publisher(JointState, TOPIC_JOINT_STATES, qos_profile_sensor_data)
        self.command_pub = self.create_publisher(JointState, TOPIC_ACTION_COMMAND, 10)
        self.status_pub = self.create_publisher(ControllerStatus, TOPIC_CONTROLLER_STATUS, 10)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(ActionChunkMsg, TOPIC_ACTION_CHUNK, self.on_chunk, reliable)
        self.create_subscription(Bool, "/mail/estop", self.on_estop, reliable)
        self.create_service(Trigger, "~/enable", self.on_enable)
        self.create_service(Trigger, "~/disable", self.on_disable)
        self.create_timer(1.0 / p["status_rate_hz"], self.publish_status)

        self.get_logger().info(f"connecting to the arm at {p['robot_ip']}" + (" (dry run)" if p["dry_run"] else ""))
        self.arm.connect(timeout=20.0)
        if p["dry_run"]:  # a dry-run arm echoes commands; it starts at this joint configuration
            self.arm.send(CommandState.at_rest(np.array(p["dry_run_start"], dtype=float), 0.08))
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self.control_loop, name="control", daemon=True)
        self._loop.start()

    def _declare(self, defaults: dict) -> dict:
        return {k: self.declare_parameter(k, v, READ_ONLY).value for k, v in defaults.items()}

    # ---- callbacks: hand data to the core --------------------------------------------------------
    def on_chunk(self, msg: ActionChunkMsg) -> None:
        chunk = chunk_from_msg(msg)
        with self.lock:
            if (self.auto_enable and self.ctrl.mode.name == "DISABLED"
                    and self.ctrl.scheduler.validate(chunk, time.time()).ok):
                # once, on the first chunk that can run (a stale start-up chunk would only arm the
                # watchdog); a later disable, hold or error needs the enable service
                ok, why = self.ctrl.enable(now=time.time())
                self.auto_enable = not ok
                self.get_logger().info(f"auto enable on first chunk: {why}")
            verdict = self.ctrl.submit_chunk(chunk, now=time.time())
        if not verdict.ok:
            self.get_logger().warn(f"chunk {chunk.sequence} rejected: {verdict.reason.value} {verdict.detail}",
                                   throttle_duration_sec=2.0)

    def on_estop(self, msg: Bool) -> None:
        """True: hold at once and refuse enable; False: release (the arm stays held until ~/enable)."""
        with self.lock:
            self.ctrl.estop(bool(msg.data))
        if msg.data:
            self.get_logger().error("E-STOP: holding; publish false to release, then call ~/enable",
                                    throttle_duration_sec=1.0)
        else:
            self.get_logger().info("e-stop released; call ~/enable to resume")

    def on_enable(self, request, response):
        with self.lock:
            if self.ctrl.mode.name == "ERROR":
                self.arm.recover()
            response.success, response.message = self.ctrl.enable(now=time.time())
        self.get_logger().info(f"enable: {response.message}")
        return response

    def on_disable(self, request, response):
        with self.lock:
            self.ctrl.disable()
        response.success, response.message = True, "holding, then disabled at rest"
        return response

    # ---- the control loop -------------------------------------------------------------------------
    def control_loop(self) -> None:
        next_t = time.monotonic()
        cycle = 0
        while not self._stop.is_set():
            with self.lock:
                out = run_cycle(self.ctrl, self.arm, now=time.time())
            # the state run_cycle just read: a second read per cycle would query the robot (and the
            # gripper's width) twice on the control path
            state = self.arm.last_state if cycle % self.joint_every == 0 else None
            if state is not None:
                self.publish_joint_state(state)
            if out is not None:
                self.publish_command(out)
            cycle += 1
            next_t += self.period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()  # overran: do not try to catch up with a burst

    def publish_joint_state(self, state) -> None:
        # a state whose robot time did not advance (the simulator's clock stalls under load) was already
        # published: sent again it would carry the same data under an older-or-equal stamp
        if state.robot_time <= self._last_joint_time:
            return
        self._last_joint_time = state.robot_time
        m = JointState()
        m.header.stamp = to_time(self.clock_map.update(state.robot_time, time.time()))
        m.name = list(FR3_JOINT_NAMES) + list(FR3_FINGER_NAMES)
        half = 0.5 * state.gripper_width if state.gripper_width is not None else 0.0
        m.position = [float(x) for x in state.q] + [half, half]
        m.velocity = [float(x) for x in state.dq] + [0.0, 0.0]
        self.joint_pub.publish(m)

    def publish_command(self, out) -> None:
        m = JointState()
        m.header.stamp = to_time(out.t)
        m.name = list(FR3_JOINT_NAMES) + [GRIPPER_NAME]
        m.position = [float(x) for x in out.command.q] + [float(out.command.gripper)]
        m.velocity = [float(x) for x in out.command.dq] + [0.0]
        self.command_pub.publish(m)

    def publish_status(self) -> None:
        with self.lock:
            s = self.ctrl.status()
        m = ControllerStatus()
        m.header.stamp = self.get_clock().now().to_msg()
        m.mode, m.reason, m.dry_run = int(s.mode), s.reason, self.dry_run
        m.active_policy_id, m.active_sequence = s.active_policy_id, s.active_sequence
        m.chunks_received, m.chunks_rejected = s.chunks_received, s.chunks_rejected
        m.actions_dropped_stale, m.watchdog_trips, m.limit_hits = \
            s.actions_dropped_stale, s.watchdog_trips, s.limit_hits
        m.limit_names = sorted(s.limits)
        m.limit_counts = [int(s.limits[n]) for n in m.limit_names]
        m.commanded_position = [float(x) for x in s.commanded_position]
        m.measured_position = [float(x) for x in s.measured_position]
        m.cycle_jitter_p99_ms = float(s.cycle_jitter_p99_ms)
        self.status_pub.publish(m)

    def destroy_node(self):
        self._stop.set()
        self._loop.join(timeout=2.0)
        self.arm.close()
        return super().destroy_node()


def main(args=None):
    # one executor thread: every callback is short and only takes the core's lock; a second thread
    # made rclpy's MultiThreadedExecutor spin on callbacks blocked behind that lock (a core burnt)
    run(FrankaControllerNode, args)


if __name__ == "__main__":
    main()
