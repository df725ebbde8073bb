"""Each node's health on ``/diagnostics`` (diagnostic_msgs/DiagnosticArray), as ROS tools expect it:
``rqt_robot_monitor``, ``ros2 topic echo /diagnostics`` and the diagnostic aggregator read it.

One DiagnosticStatus per node, named by the node's full name (``/arm1/franka_controller``), at most once
a period, from what the node already knows: a status message (ControllerStatus, PolicyStatus) becomes
key/value pairs field by field, so nothing is counted twice. ``/diagnostics`` stays absolute in every
namespace: the aggregator listens there, and the status names tell the nodes of two arms apart.
"""

from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

TOPIC_DIAGNOSTICS = "/diagnostics"
PERIOD_S = 1.0

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def key_values(values) -> list[KeyValue]:
    """A dict, or a ROS message (its fields but the header), as diagnostic key/value pairs."""
    if not isinstance(values, dict):
        values = {name: getattr(values, name) for name in values.get_fields_and_field_types() if name != "header"}
    out = []
    for key, value in values.items():
        if isinstance(value, float):
            text = f"{value:.4g}"
        elif isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
            items = value.tolist() if hasattr(value, "tolist") else value
            text = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in items)
        else:
            text = str(value)
        out.append(KeyValue(key=str(key), value=text))
    return out


class Diagnostics:
    """Publishes one node's DiagnosticStatus; ``update`` may be called often, it sends once a period."""

    def __init__(self, node, hardware_id: str = "", period: float = PERIOD_S):
        self.node = node
        self.name = node.get_fully_qualified_name()
        self.hardware_id = hardware_id
        self.period = float(period)
        self._last = -float("inf")
        self._pub = node.create_publisher(DiagnosticArray, TOPIC_DIAGNOSTICS, 10)

    def update(self, level: bytes, message: str, values=None, force: bool = False) -> bool:
        """Send (level, message, values) unless one went out less than a period ago (``force``: send anyway,
        e.g. on an error). Returns whether it was sent."""
        now = time.monotonic()
        if not force and now - self._last < self.period:
            return False
        self._last = now
        status = DiagnosticStatus(level=level, name=self.name, message=message, hardware_id=self.hardware_id,
                                  values=key_values(values) if values is not None else [])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.node.get_clock().now().to_msg()
        self._pub.publish(array)
        return True
