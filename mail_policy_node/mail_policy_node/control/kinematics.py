"""FR3 forward kinematics from the Denavit-Hartenberg parameters, and a small damped IK.

Craig's (modified) DH convention as published for the FR3/Panda by Franka (a, d, alpha per joint;
the flange 0.107 m after joint 7). The Franka Hand's tool centre point (TCP) is 0.1034 m along the
flange z axis, rotated -45 deg about z. ``fk`` works on batches: q of shape (..., 7).
"""

from __future__ import annotations

import numpy as np

# (a_{i-1}, d_i, alpha_{i-1}) for joints 1..7 [m, m, rad]
FR3_DH = np.array([
    [0.0, 0.333, 0.0],
    [0.0, 0.0, -np.pi / 2],
    [0.0, 0.316, np.pi / 2],
    [0.0825, 0.0, np.pi / 2],
    [-0.0825, 0.384, -np.pi / 2],
    [0.0, 0.0, np.pi / 2],
    [0.088, 0.0, np.pi / 2],
])
FLANGE_D = 0.107  # [m] joint 7 frame to flange
HAND_TCP_D = 0.1034  # [m] flange to Franka Hand TCP (between the fingertips)
HAND_YAW = -np.pi / 4  # hand mounted at -45 deg about the flange z axis


def _const_part(a: float, alpha: float) -> np.ndarray:
    """Rot_x(alpha) Trans_x(a): the joint-independent half of a modified-DH transform."""
    ca, sa = np.cos(alpha), np.sin(alpha)
    return np.array([[1.0, 0.0, 0.0, a], [0.0, ca, -sa, 0.0], [0.0, sa, ca, 0.0], [0.0, 0.0, 0.0, 1.0]])


_DH_CONST = np.stack([_const_part(a, alpha) for a, _, alpha in FR3_DH])  # (7, 4, 4)


def _local_transforms(q: np.ndarray) -> np.ndarray:
    """Modified-DH transforms Rot_x(alpha) Trans_x(a) Rot_z(q) Trans_z(d): (..., 7) -> (..., 7, 4, 4)."""
    c, s = np.cos(q), np.sin(q)
    Z = np.zeros(q.shape + (4, 4))
    Z[..., 0, 0] = c
    Z[..., 0, 1] = -s
    Z[..., 1, 0] = s
    Z[..., 1, 1] = c
    Z[..., 2, 2] = 1.0
    Z[..., 2, 3] = FR3_DH[:, 1]
    Z[..., 3, 3] = 1.0
    return _DH_CONST @ Z


def _tool(d: float, yaw: float) -> np.ndarray:
    T = np.eye(4)
    T[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    T[2, 3] = d
    return T


T_FLANGE = _tool(FLANGE_D, 0.0)
T_FLANGE_TCP = _tool(HAND_TCP_D, HAND_YAW)


def joint_frames(q: np.ndarray) -> np.ndarray:
    """Base-frame transforms of joint frames 1..7 and the flange: q (..., 7) -> (..., 8, 4, 4)."""
    q = np.asarray(q, dtype=float)
    local = _local_transforms(q)
    frames = np.empty(q.shape[:-1] + (8, 4, 4))
    T = local[..., 0, :, :]
    frames[..., 0, :, :] = T
    for i in range(1, 7):
        T = T @ local[..., i, :, :]
        frames[..., i, :, :] = T
    frames[..., 7, :, :] = T @ T_FLANGE
    return frames


def _flange(q: np.ndarray) -> np.ndarray:
    local = _local_transforms(np.asarray(q, dtype=float))
    T = local[..., 0, :, :]
    for i in range(1, 7):
        T = T @ local[..., i, :, :]
    return T @ T_FLANGE


def fk(q: np.ndarray, tcp: bool = True) -> np.ndarray:
    """Pose of the hand TCP (or the flange with ``tcp=False``) in the base frame: (..., 7) -> (..., 4, 4)."""
    flange = _flange(q)
    return flange @ T_FLANGE_TCP if tcp else flange


def fk_position(q: np.ndarray) -> np.ndarray:
    """TCP position only: (..., 7) -> (..., 3)."""
    flange = _flange(q)
    return flange[..., :3, :3] @ T_FLANGE_TCP[:3, 3] + flange[..., :3, 3]


def jacobian(q: np.ndarray) -> np.ndarray:
    """Geometric Jacobian (6, 7) of the TCP in the base frame, rows [v; omega]. q of shape (7,)."""
    frames = joint_frames(q)
    p_tcp = (frames[7] @ T_FLANGE_TCP)[:3, 3]
    J = np.zeros((6, 7))
    for i in range(7):
        z = frames[i, :3, 2]  # modified DH: joint i rotates about z of frame i
        J[:3, i] = np.cross(z, p_tcp - frames[i, :3, 3])
        J[3:, i] = z
    return J


def rotvec_to_matrix(r: np.ndarray) -> np.ndarray:
    """Rotation vector (3,) -> rotation matrix (3, 3) (Rodrigues)."""
    theta = float(np.linalg.norm(r))
    if theta < 1e-12:
        return np.eye(3)
    k = r / theta
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * K @ K


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> rotation vector (3,)."""
    cos = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    theta = np.arccos(cos)
    if theta < 1e-9:
        return 0.5 * np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if np.pi - theta < 1e-6:  # near 180 deg: axis from the symmetric part
        axis = np.sqrt(np.maximum((np.diag(R) + 1.0) / 2.0, 0.0))
        i = int(np.argmax(axis))
        axis = (R[:, i] + R[i, :]) / 2.0
        axis[i] = np.sqrt(max((R[i, i] + 1.0) / 2.0, 0.0))
        return theta * axis / np.linalg.norm(axis)
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return theta * w / (2.0 * np.sin(theta))


def ik(target: np.ndarray, q_seed: np.ndarray, q_min: np.ndarray, q_max: np.ndarray,
       iterations: int = 50, damping: float = 0.02, tol_pos: float = 1e-4, tol_rot: float = 1e-3,
       ) -> tuple[np.ndarray, bool]:
    """Damped-least-squares IK of the TCP pose ``target`` (4, 4) from ``q_seed``, joints kept in [q_min, q_max].

    Returns (q, converged). Local only: meant for small Cartesian deltas near the seed, which is what
    ``ee_delta_pose`` chunks are. Steps are capped at 0.2 rad per iteration.
    """
    q = np.clip(np.asarray(q_seed, dtype=float), q_min, q_max)
    for _ in range(iterations):
        T = fk(q)
        e_pos = target[:3, 3] - T[:3, 3]
        e_rot = matrix_to_rotvec(target[:3, :3] @ T[:3, :3].T)
        if np.linalg.norm(e_pos) < tol_pos and np.linalg.norm(e_rot) < tol_rot:
            return q, True
        J = jacobian(q)
        e = np.concatenate([e_pos, e_rot])
        dq = J.T @ np.linalg.solve(J @ J.T + damping**2 * np.eye(6), e)
        step = np.max(np.abs(dq))
        if step > 0.2:
            dq *= 0.2 / step
        q = np.clip(q + dq, q_min, q_max)
    T = fk(q)
    ok = (np.linalg.norm(target[:3, 3] - T[:3, 3]) < tol_pos
          and np.linalg.norm(matrix_to_rotvec(target[:3, :3] @ T[:3, :3].T)) < tol_rot)
    return q, bool(ok)
