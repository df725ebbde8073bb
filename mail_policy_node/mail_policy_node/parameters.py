"""A node's parameters, declared once: name, default, meaning (with its unit), and the values it takes.

Each node has one table of `Parameter`s next to its ROS-free core (control/params.py, runtime.py,
data/cameras.py, sim/franky.py; the bag player and the chunk recorder, which have none, in their node
modules). The node declares exactly that table through ``nodes.parameters.declare_table``, so
``ros2 param describe`` shows each description, range and read-only flag, and the profiles' YAML files
override the values. Where a core dataclass or constructor already holds a default, the table takes it
from there (``default_of``) rather than writing the number a second time.

ROS has ranges for numbers but no enumerations: the strings a parameter takes (``choices``) are listed
in its description and checked by ``Parameter.check``. No rclpy here.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class Parameter:
    name: str
    default: object
    description: str  # what it means, with its unit in brackets: "[s] without a fresh chunk the arm holds"
    low: int | float | None = None  # inclusive range of an int or float parameter; None: no range
    high: int | float | None = None
    choices: tuple[str, ...] = ()  # the strings a string parameter takes (listed in its description)
    read_only: bool = True  # False: may change at run time (`ros2 param set`); the node must handle it

    def __post_init__(self):
        if not self.description.strip():
            raise ValueError(f"parameter {self.name} needs a description")
        if (self.low is None) != (self.high is None):
            raise ValueError(f"parameter {self.name}: a range needs both low and high")
        if self.low is not None:
            number = isinstance(self.default, (int, float)) and not isinstance(self.default, bool)
            if not number:
                raise ValueError(f"parameter {self.name}: only int and float parameters take a range")
            if isinstance(self.default, int) and not (isinstance(self.low, int) and isinstance(self.high, int)):
                raise ValueError(f"parameter {self.name}: an int parameter's range is two ints")
            if not self.low <= self.default <= self.high:
                raise ValueError(f"parameter {self.name}: default {self.default} outside [{self.low}, {self.high}]")
        if self.choices and (not isinstance(self.default, str) or self.default not in self.choices):
            raise ValueError(f"parameter {self.name}: default {self.default!r} is not one of {self.choices}")

    @property
    def is_integer(self) -> bool:
        return isinstance(self.default, int) and not isinstance(self.default, bool)

    def allowed(self) -> str:
        """The values it takes, in words ("" when any value of its type goes)."""
        if self.choices:
            return "one of: " + ", ".join(repr(c) if c == "" else c for c in self.choices)
        if self.low is not None:
            return f"[{self.low}, {self.high}]"
        return ""

    def full_description(self) -> str:
        """What `ros2 param describe` shows: the meaning, and for a string enum the strings it takes
        (the range of a number has fields of its own)."""
        return f"{self.description} ({self.allowed()})" if self.choices else self.description

    def check(self, value) -> None:
        """Raise ValueError naming the parameter when `value` is outside its range or choices."""
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.name} must be {self.allowed()}; got {value!r}")
        if self.low is not None and not self.low <= value <= self.high:
            raise ValueError(f"{self.name} must be in {self.allowed()}, got {value}")


def default_of(owner, name: str):
    """The default of argument `name` of `owner` (a dataclass's field, a class's or function's argument):
    a table takes a default the core already holds from there, so it lives in one place."""
    if dataclasses.is_dataclass(owner):
        default = {f.name: f for f in dataclasses.fields(owner)}[name].default  # MISSING for a factory
    else:
        default = inspect.signature(owner).parameters[name].default
    if default is dataclasses.MISSING or default is inspect.Parameter.empty:
        raise ValueError(f"{owner.__name__}.{name} has no plain default to take")
    return default


def defaults(table: tuple[Parameter, ...]) -> dict:
    return {p.name: p.default for p in table}


# Parameters every ROS node has (rclpy declares them itself), which no node's table repeats; a profile may set
# them (the `sim` profile's use_sim_time), so readers of a profile's values for a table skip them.
ROS_NODE_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("use_sim_time", False, "follow ROS time from /clock: the simulated world's in the sim profile"),
)


def without_ros_node_parameters(values: dict) -> dict:
    return {k: v for k, v in values.items() if k not in {p.name for p in ROS_NODE_PARAMETERS}}
