"""QoS profiles the nodes share, one home each."""

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

# Status topics (ControllerStatus, PolicyStatus): reliable and transient-local, the newest kept, so a
# subscriber that joins late (`ros2 topic echo`, a dashboard, an operator script) gets the current status
# at once instead of after the next period. Volatile subscribers match it too.
STATUS_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
