"""Declares a node's parameter table (mail_policy_node.parameters) on an rclpy node, each parameter with
a ParameterDescriptor: its description, read-only flag and range, so `ros2 param describe` explains it
and rclpy refuses a value outside the range (at start-up from the YAML or `-p`, and on `ros2 param set`)."""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterValueException
from rclpy.node import Node

from mail_policy_node.parameters import Parameter


def descriptor(spec: Parameter, with_range: bool = True) -> ParameterDescriptor:
    d = ParameterDescriptor(description=spec.full_description(), read_only=spec.read_only)
    if spec.choices:
        d.additional_constraints = spec.allowed()
    if with_range and spec.low is not None:
        if spec.is_integer:
            d.integer_range = [IntegerRange(from_value=spec.low, to_value=spec.high, step=1)]
        else:  # step 0: any value in the range
            d.floating_point_range = [FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high),
                                                         step=0.0)]
    return d


def declare_table(node: Node, table: tuple[Parameter, ...]) -> dict:
    """Declare every parameter of `table` on `node` (overrides from the YAML and `-p` apply) and return
    name -> value. A value outside its range or choices raises ValueError naming the parameter, what it
    takes and the value: the node does not start (nodes.run says why in one line and exits 2)."""
    values = {}
    for spec in table:
        try:
            value = node.declare_parameter(spec.name, spec.default, descriptor(spec)).value
        except InvalidParameterValueException:
            # rclpy refused the value against the range, and declared nothing. Its message does not hand
            # the value over; declared without the range, the value is read and refused in plain words.
            value = node.declare_parameter(spec.name, spec.default, descriptor(spec, with_range=False)).value
            spec.check(value)
            raise
        spec.check(value)  # choices: ROS has no enum constraint
        values[spec.name] = value
    return values
