"""Scripted experts with privileged state, in the joint_position action space.

An expert plans in Cartesian space (tool centre point position, hand yaw, gripper width) and turns
each control step's target into joint targets with differential IK (`ArmKinematics.ik`, warm-started
from its previous command, so the commands form a smooth joint trajectory). The plan is a Python
generator that yields one Cartesian target per control step and reads the simulation's privileged
state when it needs to (closed loop: pushing follows the block, a failed grasp is retried).

Human-like variation, all drawn from the expert's own seed: an episode speed factor, a sideways bow
on every free-space move, small via-point offsets and random waiting times.
Multimodality where the task allows it: which pair of cube
faces to grasp and the carry arc (pick_place), direct or over-then-down approaches (reach, memory).

What an expert commands can be executed by the stack as it is (`ExpertLimits`): a policy learns the speeds
of its demonstrations, and a demonstration faster than the deployment's safety filter is slowed down on the
robot (it then times out, or arrives late on a moving plan). Every move is timed so that its joint
velocities and accelerations stay within a share of the filter's (the `sim` profile's, which is the most a
real profile allows at its last runbook stage), the IK keeps the joints inside the filter's range, and the
TCP stays a clearance above the workspace box's floor (`FLOOR_CLEARANCE`); closed-loop segments (pushing)
are rate-limited to the same velocities. Moves are timed as a trapezoid in time (speed ramps up over the
first fifth, down over the last), not min-jerk: min-jerk's slow start (under 4 % of the way after a sixth of
the move), stretched to these limits, made a demonstration stand almost still for several steps at every via
point, where a policy that sees one frame cannot tell "about to move" from "arrived".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Iterator

import numpy as np

from .env import GRIPPER_MAX_WIDTH, TaskEnv
from .kinematics import down_rotation, wrap_gripper_yaw
from .tasks import BLOCK_HALF, CUBE_HALF

Target = tuple[np.ndarray, float, float]  # tcp position, hand yaw, gripper width


EXPERT_SHARE = 0.7  # of the filter's velocity and acceleration limits (the rest: tracking corrections)
# [m] the TCP's lowest height above the filter's floor (workspace_min z + workspace_margin). The filter checks
# where the TCP would stop if it braked now, so a motion along the floor is braked whenever that point dips
# under it: the push expert pushing 2 mm above the floor, run through the sim profile's controller core, met
# 4288 workspace overrides in 19 episodes and took 24 % more steps; 6 mm above it, none (and 2 % more steps).
FLOOR_CLEARANCE = 0.01
STRETCH_ROUNDS = 6  # a move is re-timed at most this often to meet the limits
RAMP = 0.2  # of a move's time spent speeding up, and as much slowing down
MAX_MOVE_S = 20.0  # [s] and made at most this long (a jump in the IK is not a speed: act() rate-limits it)


@dataclass(frozen=True)
class ExpertLimits:
    """What an expert may command: joint range (7,), velocity and acceleration (7,) and the TCP's lowest
    height [m]."""

    q_min: np.ndarray
    q_max: np.ndarray
    dq_max: np.ndarray
    ddq_max: np.ndarray
    tcp_z_min: float

    @classmethod
    def from_safety(cls, safety, share: float = EXPERT_SHARE, inset: float = 0.01,
                    clearance: float = FLOOR_CLEARANCE) -> ExpertLimits:
        """From a safety filter's configuration (control.safety.SafetyConfig): ``share`` of its velocity and
        acceleration, its joint range less ``inset`` [rad], and its workspace floor plus its margin and
        ``clearance`` [m]."""
        lim = safety.limits
        return cls(lim.q_min + inset, lim.q_max - inset, share * safety.velocity_limit, share * lim.ddq_max,
                   float(safety.workspace_min[2]) + safety.workspace_margin + clearance)

    @classmethod
    def deployment(cls) -> ExpertLimits:
        """The `sim` profile's filter (control.params.full_stage_safety)."""
        from ..control.params import full_stage_safety

        return cls.from_safety(full_stage_safety())

    def joint_ratio(self, q: np.ndarray, dt: float) -> float:
        """How far a joint path (N, 7) sampled every ``dt`` exceeds the velocity and acceleration limits:
        the factor its duration must grow by (<= 1: within them)."""
        if len(q) < 2:
            return 0.0
        dq = np.diff(q, axis=0) / dt
        ratio = float(np.max(np.abs(dq) / self.dq_max))
        if len(q) > 2:
            ddq = np.diff(dq, axis=0) / dt
            ratio = max(ratio, math.sqrt(float(np.max(np.abs(ddq) / self.ddq_max))))
        return ratio


def _trapezoid(s: float, ramp: float = RAMP) -> float:
    """Share of the way done at time share ``s`` in [0, 1] with a trapezoidal speed profile: constant
    acceleration over the first ``ramp`` of the time, constant speed, constant deceleration over the last."""
    top = 1.0 / (1.0 - ramp)  # the constant speed, in ways per move time
    if s < ramp:
        return top * s * s / (2 * ramp)
    if s > 1.0 - ramp:
        return 1.0 - top * (1.0 - s) ** 2 / (2 * ramp)
    return top * (s - ramp / 2)


def _yaw_from_quat(quat: np.ndarray) -> float:
    w, x, y, z = quat
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


class ScriptedExpert:
    """Base class: `reset()` after `env.reset()`, then `act()` once per control step."""

    def __init__(self, env: TaskEnv, seed: int | None = None, limits: ExpertLimits | None = None):
        self.env = env
        self._seed = seed
        self.limits = limits or ExpertLimits.deployment()
        self.rate_limited_steps = 0  # steps the velocity guard in act() shortened (a plan too fast)

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
        self.rate_limited_steps = 0
        self._plan = self.plan()

    def act(self, obs: dict | None = None) -> np.ndarray:
        try:
            pos, yaw, grip = next(self._plan)
        except StopIteration:
            pos, yaw, grip = self.pos, self.yaw, self.grip
        self.pos, self.yaw, self.grip = self._floor(pos), float(yaw), float(grip)
        q = self._ik(self.q_cmd, self.pos, self.yaw)
        step, most = q - self.q_cmd, self.limits.dq_max * self.env.dt
        if np.any(np.abs(step) > most):  # a closed-loop segment faster than the limits: follow at the most
            self.rate_limited_steps += 1
            q = self.q_cmd + step * float(np.min(most / np.maximum(np.abs(step), 1e-12)))
        self.q_cmd = q
        return np.concatenate([self.q_cmd, [self.grip]])

    def _floor(self, pos) -> np.ndarray:
        pos = np.array(pos, float)
        pos[2] = max(pos[2], self.limits.tcp_z_min)
        return pos

    def _ik(self, q0: np.ndarray, pos: np.ndarray, yaw: float) -> np.ndarray:
        return self.env.kinematics.ik(q0, pos, down_rotation(yaw), bounds=(self.limits.q_min, self.limits.q_max))

    # --- plan building blocks ---------------------------------------------------------------------
    def plan(self) -> Iterator[Target]:
        raise NotImplementedError

    def move(self, goal, yaw: float | None = None, grip: float | None = None, speed: float = 0.25,
             bow: float = 0.0, min_time: float = 0.4) -> Iterator[Target]:
        """Trapezoid-timed move of the tcp to ``goal`` (and yaw), bowing sideways by up to ``bow`` metres."""
        p0, y0, g0 = self.pos.copy(), self.yaw, self.grip
        p1 = np.asarray(goal, float)
        y1 = y0 if yaw is None else yaw
        g1 = g0 if grip is None else grip
        dist = float(np.linalg.norm(p1 - p0))
        duration = max(min_time, dist / (speed * self.speed), abs(y1 - y0) / 1.2)
        side = np.zeros(3)
        if dist > 1e-6 and bow:
            direction = (p1 - p0) / dist
            side = np.cross(direction, [0.0, 0.0, 1.0])
            if np.linalg.norm(side) < 1e-6:
                side = np.array([1.0, 0.0, 0.0])
            side = side / np.linalg.norm(side) * bow

        def path(n: int) -> list[Target]:
            out = []
            for k in range(1, n + 1):
                s = _trapezoid(k / n)
                out.append((p0 + (p1 - p0) * s + side * math.sin(math.pi * s), y0 + (y1 - y0) * s, g0 + (g1 - g0) * s))
            return out

        # Stretch the move until its joint path (the IK of every target, as act() will compute it, from
        # rest to rest) is within the velocity and acceleration limits.
        for _ in range(STRETCH_ROUNDS):
            n = max(1, math.ceil(duration / self.env.dt - 1e-9))
            targets = path(n)
            q, qs = self.q_cmd, [self.q_cmd, self.q_cmd]
            for pos, yaw, _ in targets:
                q = self._ik(q, self._floor(pos), yaw)
                qs.append(q)
            qs.append(q)
            ratio = self.limits.joint_ratio(np.array(qs), self.env.dt)
            if ratio <= 1.0 or n * self.env.dt >= MAX_MOVE_S:
                break
            duration = min(n * self.env.dt * min(ratio, 3.0) * 1.05, MAX_MOVE_S)
        yield from targets

    def hold(self, steps: int, grip: float | None = None) -> Iterator[Target]:
        for _ in range(steps):
            yield self.pos, self.yaw, self.grip if grip is None else grip

    def until_hand_still(self, grip: float, max_steps: int = 30) -> Iterator[Target]:
        """Hold until the Hand's command has run (the fingers closed on the object or at their width)."""
        for _ in range(max_steps):
            if not self.env.hand.moving:
                return
            yield from self.hold(1, grip=grip)

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

    @property
    def height(self) -> float:
        """The TCP's height while pushing: as low as the limits allow (the block is 5 cm tall)."""
        return self.limits.tcp_z_min

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
            yield from self.until_hand_still(grip=0.0)  # the Hand closes at its own speed (sim/hand.py)
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


def make_expert(env: TaskEnv, seed: int | None = None, limits: ExpertLimits | None = None) -> ScriptedExpert:
    """The scripted expert for ``env``'s task (within ``limits``, default the deployment's). Call
    ``reset()`` after each ``env.reset()``."""
    try:
        cls = EXPERTS[env.task_name]
    except KeyError:
        raise ValueError(f"no scripted expert for task {env.task_name!r}") from None
    return cls(env, seed, limits)


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
