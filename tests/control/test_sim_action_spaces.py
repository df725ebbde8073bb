"""Action spaces of simulated benchmarks never reach the arm: a Meta-World chunk (its Sawyer's hand steps and
grip effort, spec.ACTION_SPACE_EE_DELTA_POSITION) is refused by the chunk checks and by the controller, however
it is labelled, and no controller can be configured to run it."""

import numpy as np
import pytest

from mail_policy_node.control.chunks import ActionChunk, ChunkRejection, ChunkScheduler, SchedulerConfig
from mail_policy_node.control.controller import ArmController, ControllerConfig
from mail_policy_node.spec import (ACTION_SPACE_EE_DELTA_POSE, ACTION_SPACE_EE_DELTA_POSITION,
                                   ACTION_SPACE_JOINT_POSITION, ACTION_SPACES, EE_DELTA_NAMES,
                                   EE_DELTA_POSITION_NAMES, FR3_JOINT_NAMES, GRIPPER_NAME, ROBOT_ACTION_SPACES,
                                   action_space_of)

from .conftest import READY_POSE

SIM_SPACES = [s for s in ACTION_SPACES if s not in ROBOT_ACTION_SPACES]
ROBOTS = [(ACTION_SPACE_JOINT_POSITION, FR3_JOINT_NAMES + (GRIPPER_NAME,)),
          (ACTION_SPACE_EE_DELTA_POSE, EE_DELTA_NAMES + (GRIPPER_NAME,))]


def metaworld_chunk(space=ACTION_SPACE_EE_DELTA_POSITION, names=EE_DELTA_POSITION_NAMES, seq=0):
    rows = np.tile([0.5, -0.2, 0.1, 1.0], (5, 1))[:, :len(names)]  # in range for every space: only the label differs
    rows = np.column_stack([rows, np.zeros((5, len(names) - rows.shape[1]))])
    return ActionChunk(0.0, 0.1, 0.0125, rows, tuple(names), space, "metaworld", seq)


def enabled_controller(space, names) -> ArmController:
    c = ArmController(ControllerConfig(scheduler=SchedulerConfig(names=names, action_space=space)),
                      clock=lambda: pytest.fail("tests pass time explicitly"))
    c.update_measurement(READY_POSE, 0.0, 0.08)
    assert c.enable(0.0) == (True, "enabled")
    return c


def test_metaworld_space_is_known_but_no_robot_space():
    assert ACTION_SPACE_EE_DELTA_POSITION in SIM_SPACES
    assert set(ROBOT_ACTION_SPACES) == {ACTION_SPACE_JOINT_POSITION, ACTION_SPACE_EE_DELTA_POSE}
    assert action_space_of(EE_DELTA_POSITION_NAMES) == ACTION_SPACE_EE_DELTA_POSITION


@pytest.mark.parametrize("space", SIM_SPACES)
def test_no_controller_can_be_configured_for_a_simulated_space(space):
    with pytest.raises(ValueError, match="never executed on the arm"):
        SchedulerConfig(names=EE_DELTA_POSITION_NAMES, action_space=space)
    with pytest.raises(ValueError, match="FR3 controller executes"):
        ControllerConfig(scheduler=SchedulerConfig(names=EE_DELTA_POSITION_NAMES, action_space=space))


@pytest.mark.parametrize("space", SIM_SPACES)
@pytest.mark.parametrize("robot_space, robot_names", ROBOTS)
def test_chunk_check_refuses_a_simulated_space_with_its_reason(space, robot_space, robot_names):
    s = ChunkScheduler(SchedulerConfig(names=robot_names, action_space=robot_space))
    for names in (EE_DELTA_POSITION_NAMES, robot_names):  # its own names, or relabelled as the robot's
        v = s.accept(metaworld_chunk(space, names), now=0.0)
        assert not v.ok and v.reason == ChunkRejection.WRONG_ACTION_SPACE, v
        assert "never executed on the arm" in v.detail and space in v.detail
        assert s.target(0.1) is None


@pytest.mark.parametrize("robot_space, robot_names", ROBOTS)
def test_enabled_controller_never_moves_on_a_metaworld_chunk(robot_space, robot_names):
    c = enabled_controller(robot_space, robot_names)
    before = c.step(0.001).command.q.copy()
    cases = [metaworld_chunk(seq=1),  # as the engine sends it: Meta-World's space and names
             metaworld_chunk(robot_space, seq=2),  # mislabelled as the robot's space: the names give it away
             metaworld_chunk(ACTION_SPACE_EE_DELTA_POSITION, robot_names, seq=3)]  # the robot's names, its space
    verdicts = [c.submit_chunk(ch, now=0.002) for ch in cases]
    assert [v.ok for v in verdicts] == [False, False, False], verdicts
    assert verdicts[0].reason == ChunkRejection.WRONG_ACTION_SPACE
    assert verdicts[1].reason == ChunkRejection.WRONG_NAMES
    assert verdicts[2].reason == ChunkRejection.WRONG_ACTION_SPACE
    assert c.status().chunks_rejected == 3 and c.status().active_policy_id == ""
    for k in range(2, 50):
        c.update_measurement(READY_POSE, k * 0.001, 0.08)
        out = c.step(k * 0.001)
    np.testing.assert_allclose(out.command.q, before, atol=1e-9)  # held where it was
