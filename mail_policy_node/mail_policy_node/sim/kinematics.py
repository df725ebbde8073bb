"""Arm kinematics on a private MjData: forward kinematics of the tool centre point and damped
least-squares inverse kinematics with a posture term in the null space. Used by the scripted experts
(privileged state) and to place the arm at reset; never touches the simulation's own MjData."""

from __future__ import annotations

import math

import mujoco
import numpy as np

from ..spec import FR3_JOINT_NAMES

# Ready posture (franky-sim's default start) and the yaw of the hand there: fingers open along -y.
HOME_Q = np.array([0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785])
HOME_YAW = -math.pi / 2


def down_rotation(yaw: float) -> np.ndarray:
    """Hand orientation pointing straight down; ``yaw`` is the direction of the finger (hand y) axis
    in the table plane. Columns are the hand's x, y, z axes in the world frame."""
    y = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    z = np.array([0.0, 0.0, -1.0])
    return np.column_stack([np.cross(y, z), y, z])


def wrap_gripper_yaw(yaw: float, reference: float = HOME_YAW) -> float:
    """The two-finger hand is symmetric under a half turn: pick the equivalent yaw nearest
    ``reference`` (keeps joint 7 well inside its range)."""
    return reference + (yaw - reference + math.pi / 2) % math.pi - math.pi / 2


class ArmKinematics:
    def __init__(self, model: mujoco.MjModel, site: str = "tcp"):
        self.model = model
        self.data = mujoco.MjData(model)
        self.site_id = model.site(site).id
        joints = [model.joint(n) for n in FR3_JOINT_NAMES]
        self.qpos_adr = np.array([j.qposadr[0] for j in joints])
        self.dof_adr = np.array([j.dofadr[0] for j in joints])
        self.lower = np.array([j.range[0] for j in joints])
        self.upper = np.array([j.range[1] for j in joints])
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def _set(self, q: np.ndarray) -> None:
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,), rotation (3, 3)) of the tcp site for arm joints ``q``."""
        self._set(np.asarray(q, float))
        return self.data.site_xpos[self.site_id].copy(), self.data.site_xmat[self.site_id].reshape(3, 3).copy()

    def ik(
        self,
        q0: np.ndarray,
        pos: np.ndarray,
        rot: np.ndarray,
        iters: int = 12,
        damping: float = 0.02,
        rot_weight: float = 0.5,
        posture_gain: float = 0.05,
        max_dq: float = 0.15,
        bounds: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Joint vector near ``q0`` whose tcp reaches ``pos`` with orientation ``rot``, inside ``bounds``
        (lower, upper) or the model's joint range."""
        lower, upper = (self.lower + 1e-3, self.upper - 1e-3) if bounds is None else bounds
        q = np.array(q0, float)
        for _ in range(iters):
            self._set(q)
            p = self.data.site_xpos[self.site_id]
            r = self.data.site_xmat[self.site_id].reshape(3, 3)
            e_pos = pos - p
            e_rot = 0.5 * sum(np.cross(r[:, i], rot[:, i]) for i in range(3))
            if np.linalg.norm(e_pos) < 1e-5 and np.linalg.norm(e_rot) < 1e-4:
                break
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site_id)
            jac = np.vstack([self._jacp[:, self.dof_adr], rot_weight * self._jacr[:, self.dof_adr]])
            err = np.concatenate([e_pos, rot_weight * e_rot])
            jjt = jac @ jac.T + damping**2 * np.eye(6)
            dq = jac.T @ np.linalg.solve(jjt, err)
            null = np.eye(7) - jac.T @ np.linalg.solve(jjt, jac)
            dq += null @ (posture_gain * (HOME_Q - q))
            dq = np.clip(dq, -max_dq, max_dq)
            q = np.clip(q + dq, lower, upper)
        return q
