"""Safety limits, each declared once: on the configuration field that holds it.

Where to add a safety limit: as a field of the configuration whose code enforces it (``SafetyConfig``
for the safety filter, ``ControllerConfig`` for the controller's own checks, ``WatchdogConfig``,
``BudgetConfig`` for the dynamics caps), declared with ``safety_limit``:

    max_tcp_speed: float = safety_limit(1.0, "m/s", 0.01, 3.0, "Cartesian speed of the TCP")

That one line is read by everything that used to repeat it, so none of them can drift:

- the configuration refuses a value outside [low, high] (``check_limits``, from its ``__post_init__``);
- the controller node declares a read-only ROS parameter of the same name (or ``parameter=``) with this
  default, range and description, and hands its value back to the field (control/params.py; a profile's
  YAML overrides it by that name);
- the safety fuzzer (scripts/fuzz_safety.py) and the property tests draw it from ``fuzz``;
- docs/safety_limits.md lists it (``limits_markdown``; scripts/safety_limits_doc.py writes the file and
  a test fails when it is stale).

What a limit does stays code of its own: its enforcement (e.g. in ``SafetyFilter``) and the independent
check of every command (``safety.check_command``), which the fuzzer runs. Relations between limits (a
box's lower corner below its upper one) are checked by the configuration's ``__post_init__`` after
``check_limits``. tests/control/test_safety_limits.py shows a new entry reaching all of the above.
No rclpy here.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

import numpy as np

from ..parameters import Parameter

METADATA_KEY = "safety_limit"


@dataclass(frozen=True)
class SafetyLimit:
    """One limit's declaration. ``field`` and ``owner`` are filled in by ``declared_limits``."""

    default: float | tuple[float, ...]  # a tuple: a vector limit, every element in [low, high]
    unit: str  # "rad", "m/s"; "" for a ratio
    low: float  # inclusive bounds: the configuration refuses a value outside, the node's ROS range is the same
    high: float
    description: str  # what it means, without the unit (added from ``unit``)
    parameter: str | None = None  # the node's ROS parameter where its name differs from the field's
    node: bool = True  # False: not a node parameter (set in code only), still checked, fuzzed and listed
    fuzz: tuple | None = None  # (low, high) the fuzzer draws from (a vector: two tuples); None: [low, high]
    field: str = ""
    owner: str = ""

    @property
    def size(self) -> int | None:
        """Number of elements of a vector limit; None for a number."""
        return len(self.default) if isinstance(self.default, tuple) else None

    @property
    def name(self) -> str | None:
        """The controller node's ROS parameter, or None when the node does not expose it."""
        return (self.parameter or self.field) if self.node else None

    @property
    def label(self) -> str:
        """How errors name it: the ROS parameter an operator sets, and the field where they differ."""
        where = f"{self.owner}.{self.field}"
        if self.name is None:
            return where
        return self.name if self.name == self.field else f"{self.name} ({where})"

    def fuzz_range(self) -> tuple:
        """(low, high) the fuzzer draws from: numbers, or for a vector limit two tuples."""
        if self.fuzz is not None:
            return self.fuzz
        if self.size is None:
            return self.low, self.high
        return (self.low,) * self.size, (self.high,) * self.size

    def check(self, value) -> None:
        """Raise ValueError naming the limit when ``value`` is not a number (a vector of ``size``
        numbers) inside [low, high]."""
        if self.size is None:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not self.low <= value <= self.high:
                raise ValueError(f"{self.label} must be in {self.allowed()}, got {value!r}")
            return
        try:
            v = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            v = None
        if v is None or v.shape != (self.size,) or not np.all((v >= self.low) & (v <= self.high)):
            raise ValueError(f"{self.label} must be {self.allowed()}, got {value!r}")

    def allowed(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.size is None:
            return f"[{self.low}, {self.high}]{unit}"
        return f"{self.size} numbers, each in [{self.low}, {self.high}]{unit}"


def safety_limit(default, unit: str, low: float, high: float, description: str, *, parameter: str | None = None,
                 node: bool = True, fuzz: tuple | None = None):
    """A dataclass field holding a safety limit: ``default`` is the field's default, the rest is the
    declaration (see the module docstring). A declaration whose default or fuzz range lies outside
    [low, high] is refused at import, so a typo cannot ship."""
    default = tuple(float(x) for x in default) if isinstance(default, (tuple, list)) else float(default)
    spec = SafetyLimit(default, unit, float(low), float(high), description, parameter, node,
                       _fuzz_of(fuzz, default))
    _check_declaration(spec)
    return dataclasses.field(default=default, metadata={METADATA_KEY: spec})


def _fuzz_of(fuzz, default):
    if fuzz is None:
        return None
    lo, hi = fuzz
    if isinstance(default, tuple):
        return tuple(float(x) for x in lo), tuple(float(x) for x in hi)
    return float(lo), float(hi)


def _check_declaration(spec: SafetyLimit) -> None:
    what = f"safety limit {spec.description!r}"
    if not spec.description.strip():
        raise ValueError("a safety limit needs a description")
    if not (math.isfinite(spec.low) and math.isfinite(spec.high) and spec.low < spec.high):
        raise ValueError(f"{what}: bounds [{spec.low}, {spec.high}] must be finite, low below high")
    lo, hi = (np.atleast_1d(np.asarray(x, float)) for x in spec.fuzz_range())

    def inside(v: np.ndarray) -> bool:
        return bool(np.all((v >= spec.low) & (v <= spec.high)))

    default = np.atleast_1d(np.asarray(spec.default, float))
    if not inside(default):
        raise ValueError(f"{what}: default {spec.default} outside [{spec.low}, {spec.high}]")
    if not (lo.shape == hi.shape == default.shape and inside(lo) and inside(hi) and np.all(lo <= hi)):
        raise ValueError(f"{what}: fuzz range {spec.fuzz} must lie inside [{spec.low}, {spec.high}], low <= high")


def declared_limits(config_class) -> tuple[SafetyLimit, ...]:
    """The safety limits a configuration dataclass declares, in field order."""
    return tuple(dataclasses.replace(f.metadata[METADATA_KEY], field=f.name, owner=config_class.__name__)
                 for f in dataclasses.fields(config_class) if METADATA_KEY in f.metadata)


def limit_of(config_class, field: str) -> SafetyLimit:
    """The declaration of ``config_class``'s field ``field`` (KeyError when it declares none)."""
    return {spec.field: spec for spec in declared_limits(config_class)}[field]


def check_limits(config) -> None:
    """Raise ValueError naming the first field of ``config`` outside its declared limit. Called by
    each configuration's ``__post_init__`` before its checks of relations between fields."""
    for spec in declared_limits(type(config)):
        spec.check(getattr(config, spec.field))


def node_parameters(config_class) -> tuple[Parameter, ...]:
    """The controller node's parameter entries for the limits ``config_class`` declares: same name,
    default, range (a vector: none, ROS ranges are for numbers; the configuration checks it) and
    description with its unit."""
    out = []
    for spec in declared_limits(config_class):
        if spec.name is None:
            continue
        description = f"[{spec.unit}] {spec.description}" if spec.unit else spec.description
        if spec.size is None:
            out.append(Parameter(spec.name, spec.default, description, spec.low, spec.high))
        else:
            out.append(Parameter(spec.name, list(spec.default), description))
    return tuple(out)


def limit_values(config_class, params: dict) -> dict:
    """Field name -> value for the limits of ``config_class`` that are node parameters, from the node's
    parameter values ``params`` (by parameter name; a vector's list becomes a tuple)."""
    out = {}
    for spec in declared_limits(config_class):
        if spec.name is not None:
            value = params[spec.name]
            out[spec.field] = tuple(value) if spec.size is not None else value
    return out


def draw_limits(config_class, rng: np.random.Generator, keep_default: float = 0.5) -> dict:
    """Field name -> a value for every limit ``config_class`` declares: its default with probability
    ``keep_default`` (what the node runs), otherwise uniform in its fuzz range. Relations between limits
    are not known here: the caller builds the configuration and draws again when it refuses."""
    out = {}
    for spec in declared_limits(config_class):
        if rng.random() < keep_default:
            continue
        lo, hi = spec.fuzz_range()
        if spec.size is None:
            out[spec.field] = float(rng.uniform(lo, hi))
        else:
            out[spec.field] = tuple(float(x) for x in rng.uniform(np.asarray(lo), np.asarray(hi)))
    return out


def _text(value) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_text(v) for v in value) + ")"
    return repr(value)


def _row(spec: SafetyLimit, fuzzed: bool) -> str:
    lo, hi = spec.fuzz_range()
    accepted = f"[{spec.low}, {spec.high}]" if spec.size is None else f"each in [{spec.low}, {spec.high}]"
    cells = (f"`{spec.name}`" if spec.name else "(code only)", f"`{spec.owner}.{spec.field}`", _text(spec.default),
             spec.unit or "-", accepted, f"{_text(lo)} .. {_text(hi)}" if fuzzed else "-",
             spec.description.replace("|", "\\|"))
    return "| " + " | ".join(cells) + " |"


def limits_markdown(config_classes, fuzzed=()) -> str:
    """The table of every limit ``config_classes`` declare (docs/safety_limits.md is this text), with
    the fuzz ranges of those in ``fuzzed`` (the classes the safety fuzzer draws)."""
    lines = [
        "# Safety limits",
        "",
        "Generated from their declarations by `python scripts/safety_limits_doc.py`: do not edit by hand",
        "(tests/control/test_safety_limits.py fails when this file is stale).",
        "",
        "**Where to add a safety limit:** one field, declared with `safety_limit(default, unit, low, high,",
        "description)`, on the configuration whose code enforces it (`mail_policy_node/control/safety_limits.py`",
        "says how). The configuration then refuses a value outside [low, high], the controller node declares",
        "the ROS parameter (read-only, with that default, range and description), the safety fuzzer draws it,",
        "and this table lists it. What the limit does (its enforcement, and its independent check in",
        "`safety.check_command` for the fuzzer) is code of its own. A profile (`mail_bringup/config/*.yaml`)",
        "sets its own value by the parameter's name.",
        "",
        "Parameter: the controller node's ROS parameter; (code only): not a node parameter. Accepted: what",
        "the configuration and the node take. Fuzzed over: what `scripts/fuzz_safety.py` draws the safety",
        "filter's limits from, half of the time (the other half it keeps the default); where it is narrower",
        "than Accepted, a comment at the declaration says why.",
        "",
        "| Parameter | Field | Default | Unit | Accepted | Fuzzed over | Meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_row(spec, cls in fuzzed) for cls in config_classes for spec in declared_limits(cls)]
    return "\n".join(lines) + "\n"
