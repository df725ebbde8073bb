"""The task suite: objects, seeded initial conditions and success predicates.

Each task contributes MJCF bodies to the scene (`elements`), draws its initial conditions from a
numpy Generator (`sample`), places them in the simulation (`apply`), may change the scene over time
(`update`, the memory task's cue) and judges the state (`evaluate` -> success, failed). Static objects
are mocap bodies so that a reset moves them without recompiling the model.

Tasks:
- ``reach``: touch a red ball floating above the table with the tool centre point.
- ``push``: push a blue block into a green goal disc on the table (gripper closed).
- ``pick_place``: grasp a red cube and drop it into a bowl.
- ``memory``: a light shows red or blue during the first second, then turns grey; red means touch
  the left pad, blue the right one. Pad positions are drawn independently of the cue, so after the
  first second no single frame tells which pad is right; touching the wrong pad ends the episode.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

# Nearest a TCP at table height may come to the arm's base [m, along x]: the elbow (joint 4) reaches the
# end of the deployment's joint range (the FR3's rectangular range less its margin, control/limits.py)
# at about 0.41 m. Objects are placed so that every expert pose lies beyond it: what is demonstrated must
# be what the deployed arm can do.
NEAR_REACH = 0.42

BLOCK_HALF = 0.025
CUBE_HALF = 0.02
BOWL_RADIUS = 0.075  # wall centre radius [m]
BOWL_WALL_HEIGHT = 0.04
PAD_RADIUS = 0.04
CUE_OFF_TIME = 1.0  # [s] the memory cue is visible for t < CUE_OFF_TIME
CUE_COLORS = {"left": (0.9, 0.1, 0.1, 1.0), "right": (0.1, 0.3, 0.95, 1.0)}
CUE_OFF_COLOR = (0.25, 0.25, 0.25, 1.0)


def _mocap(name: str, pos=(0.0, 0.0, 0.0)) -> ET.Element:
    return ET.Element("body", name=name, mocap="true", pos=" ".join(map(str, pos)))


def _visual_geom(parent: ET.Element, **attrs) -> ET.Element:
    return ET.SubElement(parent, "geom", contype="0", conaffinity="0", group="1", **attrs)


def _free_box(name: str, half: float, rgba: str, mass: float, pos) -> ET.Element:
    body = ET.Element("body", name=name, pos=" ".join(map(str, pos)))
    ET.SubElement(body, "freejoint", name=f"{name}_joint")
    ET.SubElement(body, "geom", name=name, type="box", size=f"{half} {half} {half}", rgba=rgba,
                  mass=str(mass), friction="1.2 0.01 0.001", condim="4", solref="0.01 1")
    return body


def _set_free_pose(model, data, joint: str, pos, yaw: float) -> None:
    adr = model.joint(joint).qposadr[0]
    data.qpos[adr:adr + 3] = pos
    data.qpos[adr + 3:adr + 7] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))


def tcp_pos(model, data) -> np.ndarray:
    return data.site_xpos[model.site("tcp").id].copy()


def gripper_width(model, data, prefix: str = "") -> float:
    """Sum of the two finger joints; ``prefix`` is franky-sim's robot name prefix ("robot0_")."""
    return float(sum(data.qpos[model.joint(f"{prefix}finger_joint{i}").qposadr[0]] for i in (1, 2)))


@dataclass
class Task:
    """Base class; subclasses fill in the hooks."""

    name: str = ""
    max_steps: int = 100  # episode limit at dt = 0.1 s (each task's: its experts' longest episodes, within
    #                        the deployment's limits (sim.experts), with a third to spare)
    robot_prefix: str = ""  # robot joint name prefix in the model ("robot0_" in franky-sim's scene)

    def elements(self) -> list[ET.Element]:
        return []

    def sample(self, rng: np.random.Generator, options: dict | None = None) -> dict:
        return {}

    def apply(self, model, data, params: dict) -> None:
        pass

    def update(self, model, data, params: dict, t: float) -> None:
        pass

    def evaluate(self, model, data, params: dict) -> tuple[bool, bool]:
        """(success, failed). A failed episode cannot succeed any more."""
        return False, False

    def object_state(self, model, data, params: dict) -> dict:
        """Privileged state for scripted experts and tests."""
        return {}

    def goal_distance(self, model, data, params: dict) -> float | None:
        """How far the task is from done [m] (what success thresholds), or None where no distance
        says it. Closed-loop runs report it at the start and end of an episode."""
        return None


@dataclass
class ReachTask(Task):
    name: str = "reach"
    max_steps: int = 80
    tolerance: float = 0.03

    def elements(self):
        body = _mocap("target", (0.5, 0.0, 0.1))
        _visual_geom(body, name="target", type="sphere", size="0.025", rgba="0.95 0.15 0.1 1")
        return [body]

    def sample(self, rng, options=None):
        return {"target": [rng.uniform(NEAR_REACH, 0.68), rng.uniform(-0.25, 0.25), rng.uniform(0.05, 0.25)]}

    def apply(self, model, data, params):
        data.mocap_pos[model.body("target").mocapid[0]] = params["target"]

    def evaluate(self, model, data, params):
        return bool(self.goal_distance(model, data, params) < self.tolerance), False

    def goal_distance(self, model, data, params):
        return float(np.linalg.norm(tcp_pos(model, data) - params["target"]))

    def object_state(self, model, data, params):
        return {"target": np.array(params["target"])}


@dataclass
class PushTask(Task):
    name: str = "push"
    max_steps: int = 160
    tolerance: float = 0.04  # block centre to goal centre [m]

    def elements(self):
        goal = _mocap("goal", (0.5, 0.0, 0.0))
        _visual_geom(goal, name="goal", type="cylinder", size="0.05 0.0008", pos="0 0 0.0008",
                     rgba="0.2 0.75 0.3 1")
        return [goal, _free_box("block", BLOCK_HALF, "0.15 0.35 0.9 1", 0.1, (0.5, 0.1, BLOCK_HALF))]

    def sample(self, rng, options=None):
        for _ in range(1000):
            block = np.array([rng.uniform(NEAR_REACH + 0.08, 0.64), rng.uniform(-0.2, 0.2)])  # room behind it
            angle = rng.uniform(-math.pi, math.pi)
            dist = rng.uniform(0.12, 0.2)
            goal = block + dist * np.array([math.cos(angle), math.sin(angle)])
            if NEAR_REACH + 0.02 <= goal[0] <= 0.68 and -0.25 <= goal[1] <= 0.25:
                break
        return {"block": [*block, BLOCK_HALF], "block_yaw": rng.uniform(-math.pi, math.pi), "goal": [*goal, 0.0]}

    def apply(self, model, data, params):
        _set_free_pose(model, data, "block_joint", params["block"], params["block_yaw"])
        data.mocap_pos[model.body("goal").mocapid[0]] = params["goal"]

    def evaluate(self, model, data, params):
        return bool(self.goal_distance(model, data, params) < self.tolerance), False

    def goal_distance(self, model, data, params):
        block = data.xpos[model.body("block").id]
        return float(np.linalg.norm(block[:2] - np.asarray(params["goal"][:2])))

    def object_state(self, model, data, params):
        body = model.body("block").id
        return {"block": data.xpos[body].copy(), "block_quat": data.xquat[body].copy(),
                "goal": np.array(params["goal"])}


@dataclass
class PickPlaceTask(Task):
    name: str = "pick_place"
    max_steps: int = 200

    def elements(self):
        bowl = _mocap("bowl", (0.5, -0.15, 0.0))
        ET.SubElement(bowl, "geom", name="bowl_bottom", type="cylinder", size=f"{BOWL_RADIUS} 0.003",
                      pos="0 0 0.003", rgba="0.92 0.88 0.78 1")
        n = 16
        seg = 2 * BOWL_RADIUS * math.tan(math.pi / n) / 2 + 0.002
        for i in range(n):
            a = 2 * math.pi * i / n
            ET.SubElement(
                bowl, "geom", name=f"bowl_wall{i}", type="box",
                size=f"0.004 {seg:.4f} {BOWL_WALL_HEIGHT / 2}",
                pos=f"{BOWL_RADIUS * math.cos(a):.4f} {BOWL_RADIUS * math.sin(a):.4f} {BOWL_WALL_HEIGHT / 2}",
                euler=f"0 0 {a:.4f}", rgba="0.92 0.88 0.78 1",
            )
        return [bowl, _free_box("cube", CUBE_HALF, "0.9 0.15 0.1 1", 0.05, (0.5, 0.1, CUBE_HALF))]

    def sample(self, rng, options=None):
        for _ in range(1000):
            cube = np.array([rng.uniform(NEAR_REACH + 0.03, 0.65), rng.uniform(-0.22, 0.22)])
            bowl = np.array([rng.uniform(NEAR_REACH + 0.03, 0.65), rng.uniform(-0.22, 0.22)])
            if np.linalg.norm(cube - bowl) > 0.17:
                break
        return {"cube": [*cube, CUBE_HALF], "cube_yaw": rng.uniform(-math.pi, math.pi), "bowl": [*bowl, 0.0]}

    def apply(self, model, data, params):
        _set_free_pose(model, data, "cube_joint", params["cube"], params["cube_yaw"])
        data.mocap_pos[model.body("bowl").mocapid[0]] = params["bowl"]

    def goal_distance(self, model, data, params):
        cube = data.xpos[model.body("cube").id]
        return float(np.linalg.norm(cube[:2] - np.asarray(params["bowl"][:2])))

    def evaluate(self, model, data, params):
        cube = data.xpos[model.body("cube").id]
        inside = self.goal_distance(model, data, params) < BOWL_RADIUS - 0.01 and cube[2] < 0.05
        released = gripper_width(model, data, self.robot_prefix) > 0.05
        return bool(inside and released), False

    def object_state(self, model, data, params):
        body = model.body("cube").id
        return {"cube": data.xpos[body].copy(), "cube_quat": data.xquat[body].copy(),
                "bowl": np.array(params["bowl"])}


@dataclass
class MemoryTask(Task):
    name: str = "memory"
    max_steps: int = 100
    touch_height: float = 0.035  # tcp below this height over a pad = touching it

    def elements(self):
        cue = _mocap("cue", (0.72, 0.0, 0.0))
        _visual_geom(cue, name="cue_post", type="cylinder", size="0.012 0.03", pos="0 0 0.03",
                     rgba="0.3 0.3 0.3 1")
        _visual_geom(cue, name="cue", type="sphere", size="0.03", pos="0 0 0.08",
                     rgba=" ".join(map(str, CUE_OFF_COLOR)))
        pads = []
        for side in ("left", "right"):
            pad = _mocap(f"pad_{side}", (0.5, 0.15 if side == "left" else -0.15, 0.0))
            _visual_geom(pad, name=f"pad_{side}", type="cylinder", size=f"{PAD_RADIUS} 0.0015", pos="0 0 0.0015",
                         rgba="0.95 0.8 0.1 1")
            pads.append(pad)
        return [cue, *pads]

    def sample(self, rng, options=None):
        cue = (options or {}).get("cue")
        side = rng.choice(["left", "right"])  # drawn even when forced, so other draws do not shift
        if cue is not None:
            if cue not in CUE_COLORS:
                raise ValueError(f"memory task: cue must be 'left' or 'right', got {cue!r}")
            side = cue
        return {
            "cue": str(side),
            "pad_left": [rng.uniform(NEAR_REACH + 0.03, 0.6), rng.uniform(0.12, 0.22), 0.0],
            "pad_right": [rng.uniform(NEAR_REACH + 0.03, 0.6), rng.uniform(-0.22, -0.12), 0.0],
            "cue_pos": [0.72 + rng.uniform(-0.02, 0.02), rng.uniform(-0.03, 0.03), 0.0],
        }

    def apply(self, model, data, params):
        for key in ("pad_left", "pad_right", "cue_pos"):
            name = "cue" if key == "cue_pos" else key
            data.mocap_pos[model.body(name).mocapid[0]] = params[key]
        self.update(model, data, params, 0.0)

    def update(self, model, data, params, t):
        color = CUE_COLORS[params["cue"]] if t < CUE_OFF_TIME - 1e-9 else CUE_OFF_COLOR
        model.geom_rgba[model.geom("cue").id] = color

    @staticmethod
    def _from_pad(tcp, params, side: str) -> float:
        """Horizontal distance from the tcp to the centre of pad ``side`` [m]."""
        return float(np.linalg.norm(tcp[:2] - np.asarray(params[f"pad_{side}"][:2])))

    def _touched(self, model, data, params) -> str | None:
        tcp = tcp_pos(model, data)
        if tcp[2] > self.touch_height:
            return None
        for side in ("left", "right"):
            if self._from_pad(tcp, params, side) < PAD_RADIUS:
                return side
        return None

    def goal_distance(self, model, data, params):
        """From the tcp to the cued pad's touch region (over the pad, below touch_height): 0 = touching it.
        A failed episode that ends far from it went to the other pad or never chose; one that ends a few cm
        away chose right and missed."""
        tcp = tcp_pos(model, data)
        across = max(0.0, self._from_pad(tcp, params, params["cue"]) - PAD_RADIUS)
        above = max(0.0, float(tcp[2]) - self.touch_height)
        return float(np.hypot(across, above))

    def evaluate(self, model, data, params):
        touched = self._touched(model, data, params)
        return touched == params["cue"], touched is not None and touched != params["cue"]

    def object_state(self, model, data, params):
        return {"cue": params["cue"], "pad_left": np.array(params["pad_left"]),
                "pad_right": np.array(params["pad_right"])}


TASKS: dict[str, type[Task]] = {
    "reach": ReachTask,
    "push": PushTask,
    "pick_place": PickPlaceTask,
    "memory": MemoryTask,
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]()
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}") from None
