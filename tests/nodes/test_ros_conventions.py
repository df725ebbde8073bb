"""The ROS conventions every node keeps, on real node processes over DDS: topics named relative to the
node's namespace (two arms share one graph), status topics transient-local (a late subscriber gets the
current status), each node's health on /diagnostics, and use_sim_time refused with a clear error where a node
must keep the host's clocks (the sim profile's world, policy and controller follow its /clock)."""

import pytest

from tests.rosutil import node_process, probe, stop_process, wait_for

pytestmark = pytest.mark.ros

START = [0.0, -0.3, 0.0, -2.2, 0.0, 1.9, 0.785]


def latched():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    # requests transient-local: matches only a transient-local publisher
    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def test_a_controller_in_a_namespace_keeps_its_topics_there_latches_its_status_and_reports_diagnostics():
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from sensor_msgs.msg import JointState

    from mail_msgs.msg import ControllerStatus

    proc = node_process("mail_policy_node.nodes.franka_controller_node", "franka_controller",
                        {"dry_run": True, "dry_run_start": START}, remaps={"__ns": "/arm1"})
    try:
        with probe() as p:
            inside = p.subscribe(JointState, "/arm1/joint_states")
            outside = p.subscribe(JointState, "/joint_states")
            diagnostics = p.subscribe(DiagnosticArray, "/diagnostics")
            wait_for(lambda: len(inside) > 20, 30, what="joint states in /arm1")
            name = "/arm1/franka_controller"
            mine = lambda: [s for a in diagnostics for s in a.status if s.name == name]  # noqa: E731
            wait_for(mine, 10, what="the controller's diagnostics")
            # a subscriber that asks for the last status gets it: the publisher is transient-local
            status = p.subscribe(ControllerStatus, "/arm1/mail/controller_status", latched())
            wait_for(lambda: status, 5, what="the latched status")
            assert not outside, "a topic outside the node's namespace"
        d = mine()[-1]
        values = {kv.key: kv.value for kv in d.values}
        assert d.level == DiagnosticStatus.OK and d.message.startswith("disabled: "), d
        assert values["chunks_received"] == "0" and values["dry_run"] == "True", values
        assert status[-1].mode == ControllerStatus.MODE_DISABLED
    finally:
        out = stop_process(proc)
    assert proc.returncode == 0, out


def test_a_policy_without_a_checkpoint_reports_a_warning_on_diagnostics():
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    from mail_msgs.msg import PolicyStatus

    proc = node_process("mail_policy_node.nodes.policy_node", "policy_node")
    try:
        with probe() as p:
            diagnostics = p.subscribe(DiagnosticArray, "/diagnostics")
            status = p.subscribe(PolicyStatus, "/mail/policy_status", latched())
            mine = lambda: [s for a in diagnostics for s in a.status if s.name == "/policy_node"]  # noqa: E731
            wait_for(lambda: mine() and status, 60, what="the policy's diagnostics and latched status")
        d = mine()[-1]
        assert d.level == DiagnosticStatus.WARN and d.message == "idle: no checkpoint set", d
        assert {kv.key: kv.value for kv in d.values}["chunks_published"] == "0"
    finally:
        stop_process(proc)


@pytest.mark.parametrize("module, name, params, says", [
    # a real arm keeps real time: its watchdog must never wait for a /clock that stopped (the address is
    # never dialled: the node refuses before it connects)
    ("franka_controller_node", "franka_controller", {"dry_run": True, "robot_ip": "192.0.2.10"},
     "use_sim_time refused: the controller follows a simulated clock only for a simulated arm on loopback"),
    ("franka_controller_node", "franka_controller", {"dry_run": True}, "not for robot_ip ''"),
    ("camera_node", "camera_node", {"source": "sim"}, "use_sim_time is not supported"),
    ("chunk_recorder_node", "chunk_recorder", {}, "use_sim_time is not supported"),
])
def test_use_sim_time_is_refused_with_a_clear_error(module, name, params, says):
    proc = node_process(f"mail_policy_node.nodes.{module}", name, {**params, "use_sim_time": True})
    try:
        proc.wait(timeout=60)
    finally:
        out = stop_process(proc)
    assert proc.returncode == 2, out
    assert says in out and "Traceback" not in out, out


def test_the_cores_python_logging_reaches_rosout_under_the_nodes_name():
    import logging

    from rcl_interfaces.msg import Log

    from mail_policy_node.nodes import forward_python_logging

    with probe("logging_probe") as p:
        rosout = p.subscribe(Log, "/rosout")
        handler = forward_python_logging(p.node)
        try:
            wait_for(lambda: p.node.count_publishers("/rosout") > 0, 10, what="rosout")
            core = logging.getLogger("mail_policy_node.control.franky_arm")
            core.warning("stop on close: %s", "a motion was running")
            core.error("an error line")
            mine = lambda: [m for m in rosout if m.name == "logging_probe"]  # noqa: E731
            wait_for(lambda: len(mine()) >= 2, 10, what="the core's lines on /rosout")
        finally:  # this test process's logging as it was
            package = logging.getLogger("mail_policy_node")
            package.removeHandler(handler)
            package.propagate, package.level = True, logging.NOTSET
    got = {(m.level, m.msg) for m in mine()}
    assert (Log.WARN, "mail_policy_node.control.franky_arm: stop on close: a motion was running") in got, got
    assert (Log.ERROR, "mail_policy_node.control.franky_arm: an error line") in got, got
