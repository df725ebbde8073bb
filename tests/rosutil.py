"""Helpers for tests that run real nodes as processes over DDS: start a node, collect messages in this
process, and wait on conditions (never on fixed sleeps)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from contextlib import contextmanager


def node_process(module: str, name: str, params: dict | None = None, remaps: dict | None = None,
                 **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={name}"]
    for k, v in (remaps or {}).items():
        cmd += ["-r", f"{k}:={v}"]
    for k, v in (params or {}).items():
        cmd += ["-p", f"{k}:={json.dumps(v)}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    """SIGINT, wait, kill if needed; return the process output."""
    if proc.poll() is None:
        proc.send_signal(2)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stdout.read() if proc.stdout else ""


def wait_for(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


class Probe:
    """An rclpy node in this test process, spun in a background thread, that records messages."""

    def __init__(self, name: str = "test_probe"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        # A context of its own, initialised now: it joins the domain in the environment at this moment
        # (tests may switch domains) whatever another test left initialised in this process.
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.messages: dict[str, list] = {}
        self.arrivals: dict[str, list[float]] = {}
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while not self._stop.is_set():
            self._executor.spin_once(timeout_sec=0.05)

    def subscribe(self, msg_type, topic: str, qos=10) -> list:
        box = self.messages.setdefault(topic, [])
        arrivals = self.arrivals.setdefault(topic, [])

        def cb(m):
            arrivals.append(time.time())
            box.append(m)

        self.node.create_subscription(msg_type, topic, cb, qos)
        return box

    def close(self, settle: float = 0.0):
        """``settle``: first wait, at most this long, until no other node is left in the graph. Fast DDS
        2.14 can deadlock when this process destroys an entity (the node, at close) while it is removing a
        remote participant that just died (seen once in CI after a test SIGKILLed a launched stack: the
        event thread waiting for the discovery lock, which the removal held while waiting for the event
        thread): tests that kill a graph let its participants go first."""
        import rclpy

        deadline = time.monotonic() + settle
        while time.monotonic() < deadline and set(self.node.get_node_names()) - {self.node.get_name()}:
            time.sleep(0.1)
        self._stop.set()
        self._thread.join(timeout=2)
        self._executor.remove_node(self.node)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@contextmanager
def probe(name: str = "test_probe", settle: float = 0.0):
    p = Probe(name)
    try:
        yield p
    finally:
        p.close(settle)


@contextmanager
def private_domain():
    """Run the block in a ROS domain of its own (processes started and probes created inside it).
    For tests that SIGKILL nodes: a killed participant lingers in its domain until its lease expires,
    which disturbed discovery for the next test in the same domain."""
    import os

    from mail_policy_node.rosenv import derive_domain_id

    old = os.environ.get("ROS_DOMAIN_ID")
    os.environ["ROS_DOMAIN_ID"] = str(derive_domain_id(int(old or 0) + 37 + private_domain.count))
    private_domain.count += 1
    try:
        yield int(os.environ["ROS_DOMAIN_ID"])
    finally:
        if old is None:
            os.environ.pop("ROS_DOMAIN_ID", None)
        else:
            os.environ["ROS_DOMAIN_ID"] = old


private_domain.count = 0


def feed_constant_sensors(p: Probe, stop, pixel: int, size: int, arm, fingers, period: float = 0.05) -> None:
    """Until ``stop`` (a threading.Event) is set: both cameras (agentview, wrist) every ``period`` s, the same
    ``size`` x ``size`` grey frame of ``pixel`` every time, with a joint state (``arm`` + ``fingers``) stamped
    with each. For a policy node fed by the test process (run it in a thread)."""
    import numpy as np
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState

    from mail_policy_node.nodes.ros_convert import image_msg, to_time

    pubs = {c: p.node.create_publisher(Image, f"/camera/{c}/image_raw", qos_profile_sensor_data)
            for c in ("agentview", "wrist")}
    jpub = p.node.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
    names = [f"fr3_joint{i}" for i in range(1, 8)] + ["fr3_finger_joint1", "fr3_finger_joint2"]
    frame = np.full((size, size, 3), pixel, np.uint8)
    while not stop.is_set():
        t = time.time()
        for c, pub in pubs.items():
            pub.publish(image_msg(frame, t, c))
        js = JointState(name=names, position=list(arm) + list(fingers))
        js.header.stamp = to_time(t + 0.001)
        jpub.publish(js)
        time.sleep(period)
