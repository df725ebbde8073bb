"""Scripted experts with privileged state, in the joint_position action space.

An expert plans in Cartesian space (tool centre point position, hand yaw, gripper width) and turns
each control step's target into joint targets with differential IK (`ArmKinematics.ik`, warm-started
from its previous command, so the commands form a smooth joint trajectory). The plan is a Python
generator that yields one Cartesian target per control step and reads the simulation's privileged
state when it needs to (closed loop: pushing follows the block, a failed grasp is retried).

Human-like variation, all drawn from the expert's own seed: an episode speed factor, a sideways bow
on every free-space move (min-jerk timing), small via-point offsets and random waiting times.
Multimodality where the task allows it: which pair of cube
faces to grasp and the carry arc (pick_place), direct or over-then-down approaches (reach, memory).
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from .env import GRIPPER_MAX_WIDTH, TaskEnv
from .kinematics import down_rotation, wrap_gripper_yaw
from .tasks import BLOCK_HALF, CUBE_HALF

Target = tuple[np.ndarray, float, float]  # tcp position, hand yaw, gripper width


def _min_jerk(s: float) -> float:
    return s * s * s * (10 - 15 * s + 6 * s * s)


def _yaw_from_quat(quat: np.ndarray) -> float:
    w, x, y, z = quat
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


class ScriptedExpert:
    """Base class: `reset()` after `env.reset()`, then `act()` once per control step."""

    def __init__(self, env: TaskEnv, seed: int | None = None):
        self.env = env
        self._seed = seed

    def reset(self, seed: int | None = None) -> None:
        seed = seed if seed is not None else (self._seed if self._seed is not None else self.env.seed)
        # Decorrelated from the env's own draws of the same seed.
        self.rng = np.random.default_rng([int(seed), 0xE4E7])
        self.speed = self.rng.uniform(0.75, 1.3)  # episode speed factor
        state = self.env.state()
        self.q_cmd = state["command"][:7].copy()
        self.pos, _ = self.env.kinematics.fk(self.q_cmd)
        rot = state["tcp_rot"]
        self.yaw = math.atan2(rot[1, 1], rot[0, 1])  # hand y axis in the table plane
        self.grip = float(state["command"][7])
        self.mode: dict = {}
        self._plan = self.plan()

    def act(self, obs: dict | None = None) -> np.ndarray:
        try:
            pos, yaw, grip = next(self._plan)
        except StopIteration:
            pos, yaw, grip = self.pos, self.yaw, self.grip
        self.pos, self.yaw, self.grip = np.asarray(pos, float), float(yaw), float(grip)
        self.q_cmd = self.env.kinematics.ik(self.q_cmd, self.pos, down_rotation(self.yaw))
        return np.concatenate([self.q_cmd, [self.grip]])

    # --- plan building blocks ---------------------------------------------------------------------
    def plan(self) -> Iterator[Target]:
        raise NotImplementedError

    def move(self, goal, yaw: float | None = None, grip: float | None = None, speed: float = 0.25,
             bow: float = 0.0, min_time: float = 0.4) -> Iterator[Target]:
        """Min-jerk move of the tcp to ``goal`` (and yaw), bowing sideways by up to ``bow`` metres."""
        p0, y0, g0 = self.pos.copy(), self.yaw, self.grip
        p1 = np.asarray(goal, float)
        y1 = y0 if yaw is None else yaw
        g1 = g0 if grip is None else grip
        dist = float(np.linalg.norm(p1 - p0))
        duration = max(min_time, dist / (speed * self.speed), abs(y1 - y0) / 1.2)
        n = max(1, math.ceil(duration / self.env.dt))
        side = np.zeros(3)
        if dist > 1e-6 and bow:
            direction = (p1 - p0) / dist
            side = np.cross(direction, [0.0, 0.0, 1.0])
            if np.linalg.norm(side) < 1e-6:
                side = np.array([1.0, 0.0, 0.0])
            side = side / np.linalg.norm(side) * bow
        for k in range(1, n + 1):
            s = _min_jerk(k / n)
            yield p0 + (p1 - p0) * s + side * math.sin(math.pi * s), y0 + (y1 - y0) * s, g0 + (g1 - g0) * s

    def hold(self, steps: int, grip: float | None = None) -> Iterator[Target]:
        for _ in range(steps):
            yield self.pos, self.yaw, self.grip if grip is None else grip

    def random_bow(self, scale: float = 0.06) -> float:
        return float(np.clip(self.rng.normal(0.0, scale), -2 * scale, 2 * scale))


class ReachExpert(ScriptedExpert):
    def plan(self):
        target = self.env.state()["target"]
        self.mode["approach"] = "above" if self.rng.random() < 0.5 else "direct"
        if self.mode["approach"] == "above":
            above = target + [self.rng.normal(0, 0.01), self.rng.normal(0, 0.01), self.rng.uniform(0.06, 0.1)]
            yield from self.move(above, bow=self.random_bow(), speed=0.15)
            yield from self.move(target, speed=0.08)
        else:
            yield from self.move(target, bow=self.random_bow(), speed=0.12)
        while True:
            yield from self.hold(1)


class PushExpert(ScriptedExpert):
    contact = BLOCK_HALF + 0.0095  # block centre to tcp when the closed fingers touch a face
    height = 0.022  # tcp height while pushing

    def plan(self):
        # Two ways to the first push position: swing around the block's left or right side, the side
        # nearer the hand. A coin flip here made the side something no observation tells: policies
        # trained on it averaged the two swings and stalled in front of the block (push 2-6 %).
        for attempt in range(5):
            state = self.env.state()
            block, goal = state["block"], state["goal"]
            if np.linalg.norm(goal[:2] - block[:2]) < 0.015:
                break
            u = (goal[:2] - block[:2]) / np.linalg.norm(goal[:2] - block[:2])
            yaw = wrap_gripper_yaw(math.atan2(u[1], u[0]) + math.pi / 2, self.yaw)
            start = np.array([*(block[:2] - u * (self.contact + self.rng.uniform(0.03, 0.05))), self.height])
            if attempt == 0:
                left = np.array([-u[1], u[0]])
                sides = {name: np.array([*(block[:2] + sign * 0.11 * left - u * 0.04), 0.09])
                         for name, sign in (("left", 1.0), ("right", -1.0))}
                self.mode["side"] = min(sides, key=lambda k: np.linalg.norm(sides[k][:2] - self.pos[:2]))
                yield from self.move(sides[self.mode["side"]], yaw=yaw, grip=0.0, bow=self.random_bow(0.03))
            else:  # the block turned away from the line: lift, go behind it again
                yield from self.move(self.pos + [0, 0, 0.07], speed=0.15, min_time=0.3)
            yield from self.move(start + [0, 0, 0.03], yaw=yaw, speed=0.2)
            yield from self.move(start, speed=0.1, min_time=0.3)
            yield from self.push()
        yield from self.move(self.pos + [0, 0, 0.08], speed=0.15)
        while True:
            yield from self.hold(1)

    def push(self) -> Iterator[Target]:
        """Follow the block towards the goal until it is there or no longer in front of the hand."""
        push_speed = 0.12 * self.speed
        for _ in range(120):
            state = self.env.state()
            block, goal = state["block"], state["goal"]
            error = goal[:2] - block[:2]
            distance = np.linalg.norm(error)
            if distance < 0.012:
                return
            u = error / distance
            behind = block[:2] - self.pos[:2]
            if distance > 0.025 and behind @ u < math.cos(math.radians(30)) * np.linalg.norm(behind):
                return
            aim = np.array([*(block[:2] - u * (self.contact - 0.015)), self.height])
            step = aim - self.pos
            length = np.linalg.norm(step)
            limit = min(push_speed, distance + 0.02) * self.env.dt
            if length > limit:
                step *= limit / length
            yield self.pos + step, self.yaw, 0.0


class PickPlaceExpert(ScriptedExpert):
    grasp_height = CUBE_HALF  # tcp at the cube centre

    def plan(self):
        open_width = GRIPPER_MAX_WIDTH
        attempts = 0
        while True:
            state = self.env.state()
            cube = state["cube"]
            face_yaw = _yaw_from_quat(state["cube_quat"])
            # Either pair of opposite faces: two equally good grasps a quarter turn apart.
            self.mode["faces"] = int(self.rng.integers(2)) if attempts == 0 else self.mode["faces"]
            yaw = wrap_gripper_yaw(face_yaw + self.mode["faces"] * math.pi / 2, self.yaw)
            above = cube + [0, 0, self.rng.uniform(0.08, 0.12)]
            yield from self.move(above, yaw=yaw, grip=open_width, bow=self.random_bow())
            yield from self.move([cube[0], cube[1], self.grasp_height], speed=0.12)
            yield from self.hold(int(self.rng.integers(1, 3)))
            for _ in range(6):
                yield self.pos, self.yaw, max(0.0, self.grip - 0.02)  # close over ~0.6 s
            yield from self.hold(int(self.rng.integers(2, 4)), grip=0.0)
            yield from self.move(self.pos + [0, 0, 0.15 - self.grasp_height], speed=0.15)
            attempts += 1
            if self.env.state()["cube"][2] > 0.06 or attempts >= 3:
                break
            yield from self.move(self.pos, grip=open_width, min_time=0.3)  # missed: open and retry
        bowl = self.env.state()["bowl"]
        drop = np.array([bowl[0], bowl[1], 0.15]) + [*self.rng.normal(0, 0.008, 2), 0.0]
        self.mode["arc"] = "left" if self.rng.random() < 0.5 else "right"
        bow = abs(self.random_bow(0.05)) + 0.02
        yield from self.move(drop, bow=bow if self.mode["arc"] == "left" else -bow)
        yield from self.move(drop - [0, 0, self.rng.uniform(0.05, 0.07)], speed=0.1)
        yield from self.move(self.pos, grip=open_width, min_time=0.3)
        yield from self.hold(int(self.rng.integers(1, 3)))
        yield from self.move(self.pos + [0, 0, 0.08], speed=0.15)
        while True:
            yield from self.hold(1)


class MemoryExpert(ScriptedExpert):
    """Waits until the cue has gone off, then touches the pad the cue named."""

    def plan(self):
        from .tasks import CUE_OFF_TIME

        wait = math.ceil(CUE_OFF_TIME / self.env.dt) + int(self.rng.integers(0, 4))
        yield from self.hold(wait - 1)
        state = self.env.state()
        pad = state[f"pad_{state['cue']}"]
        touch = np.array([pad[0], pad[1], 0.012]) + [*self.rng.normal(0, 0.006, 2), 0.0]
        self.mode["approach"] = "above" if self.rng.random() < 0.5 else "direct"
        if self.mode["approach"] == "above":
            yield from self.move(touch + [0, 0, self.rng.uniform(0.06, 0.1)], bow=self.random_bow())
            yield from self.move(touch, speed=0.12)
        else:
            yield from self.move(touch, bow=self.random_bow(), speed=0.2)
        while True:
            yield from self.hold(1)


EXPERTS: dict[str, type[ScriptedExpert]] = {
    "reach": ReachExpert,
    "push": PushExpert,
    "pick_place": PickPlaceExpert,
    "memory": MemoryExpert,
}


def make_expert(env: TaskEnv, seed: int | None = None) -> ScriptedExpert:
    """The scripted expert for ``env``'s task. Call ``reset()`` after each ``env.reset()``."""
    try:
        cls = EXPERTS[env.task_name]
    except KeyError:
        raise ValueError(f"no scripted expert for task {env.task_name!r}") from None
    return cls(env, seed)


def run_expert_episode(env: TaskEnv, seed: int, options: dict | None = None, on_step=None) -> dict:
    """Reset ``env`` with ``seed``, run its expert to the end of the episode and return a summary
    (success, steps, expert mode). ``on_step(obs, action, next_obs, info)`` sees every transition."""
    expert = make_expert(env)
    obs = env.reset(seed, options)
    expert.reset(seed)
    info = {"success": False, "steps": 0}
    done = False
    while not done:
        action = expert.act(obs)
        next_obs, done, info = env.step(action)
        if on_step is not None:
            on_step(obs, action, next_obs, info)
        obs = next_obs
    return {"seed": seed, "task": env.task_name, "success": bool(info["success"]), "steps": info["steps"],
            "mode": dict(expert.mode)}
