"""FR3 forward kinematics against MuJoCo's FK of franky-sim's FR3 model, Jacobian and IK."""

import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from mail_policy_node.control import kinematics as K
from mail_policy_node.control.limits import FR3_Q_MAX, FR3_Q_MIN

from .conftest import READY_POSE


@pytest.fixture(scope="module")
def mujoco_fr3():
    mujoco = pytest.importorskip("mujoco")
    franky_sim = pytest.importorskip("franky_sim")
    assets = os.path.join(os.path.dirname(franky_sim.__file__), "assets")
    root = ET.parse(os.path.join(assets, "fr3.xml")).getroot()
    root.find("compiler").set("meshdir", os.path.join(assets, "meshes"))
    model = mujoco.MjModel.from_xml_string(ET.tostring(root, encoding="unicode"))
    return mujoco, model, mujoco.MjData(model)


def test_fk_matches_mujoco_hand_body(mujoco_fr3):
    mujoco, model, data = mujoco_fr3
    joints = [model.joint(f"fr3_joint{i}") for i in range(1, 8)]
    np.testing.assert_allclose([model.jnt_range[j.id] for j in joints], np.stack([FR3_Q_MIN, FR3_Q_MAX], 1))
    hand = model.body("hand").id  # MJCF "hand" = flange rotated by the hand's -45 deg yaw
    rng = np.random.default_rng(1)
    qs = rng.uniform(FR3_Q_MIN, FR3_Q_MAX, size=(50, 7))
    ours = K.fk(qs, tcp=False) @ K._tool(0.0, K.HAND_YAW)
    for q, T in zip(qs, ours):
        data.qpos[[j.qposadr[0] for j in joints]] = q
        mujoco.mj_kinematics(model, data)
        np.testing.assert_allclose(T[:3, 3], data.xpos[hand], atol=1e-6)
        np.testing.assert_allclose(T[:3, :3], data.xmat[hand].reshape(3, 3), atol=1e-6)


def test_known_poses():
    # all zeros: arm straight up, flange at z = 0.333 + 0.316 + 0.384 - 0.107, x = 0.088
    T = K.fk(np.zeros(7), tcp=False)
    np.testing.assert_allclose(T[:3, 3], [0.088, 0.0, 0.333 + 0.316 + 0.384 - 0.107], atol=1e-12)
    np.testing.assert_allclose(K.fk_position(READY_POSE), [0.30702, 0.0, 0.48687], atol=1e-4)
    # TCP points down in the ready pose
    np.testing.assert_allclose(K.fk(READY_POSE)[:3, 2], [0, 0, -1], atol=2e-3)


def test_batched_fk_equals_single():
    rng = np.random.default_rng(2)
    qs = rng.uniform(FR3_Q_MIN, FR3_Q_MAX, size=(4, 3, 7))
    batched = K.fk_position(qs)
    for idx in np.ndindex(4, 3):
        np.testing.assert_allclose(batched[idx], K.fk(qs[idx])[:3, 3], atol=1e-12)


def test_jacobian_matches_finite_differences():
    q = READY_POSE + 0.1
    J = K.jacobian(q)
    eps = 1e-6
    for i in range(7):
        dq = np.zeros(7)
        dq[i] = eps
        T1, T0 = K.fk(q + dq), K.fk(q - dq)
        np.testing.assert_allclose(J[:3, i], (T1[:3, 3] - T0[:3, 3]) / (2 * eps), atol=1e-6)
        w = K.matrix_to_rotvec(T1[:3, :3] @ T0[:3, :3].T) / (2 * eps)
        np.testing.assert_allclose(J[3:, i], w, atol=1e-6)


def test_rotvec_round_trip():
    rng = np.random.default_rng(3)
    for r in [np.zeros(3), np.array([np.pi - 1e-9, 0, 0]), *rng.normal(0, 1, (20, 3))]:
        R = K.rotvec_to_matrix(r)
        np.testing.assert_allclose(K.rotvec_to_matrix(K.matrix_to_rotvec(R)), R, atol=1e-6)


def test_ik_recovers_a_nearby_pose():
    target_q = READY_POSE + np.array([0.1, 0.05, -0.05, 0.1, 0.05, -0.1, 0.2])
    q, ok = K.ik(K.fk(target_q), READY_POSE, FR3_Q_MIN, FR3_Q_MAX)
    assert ok
    np.testing.assert_allclose(K.fk(q), K.fk(target_q), atol=1e-3)


def test_ik_reports_unreachable():
    T = K.fk(READY_POSE)
    T[:3, 3] = [2.0, 0.0, 0.5]  # 2 m away: out of reach
    _, ok = K.ik(T, READY_POSE, FR3_Q_MIN, FR3_Q_MAX)
    assert not ok
