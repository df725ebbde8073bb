"""PolicyRuntime without ROS: synchronised inputs -> engine -> chunks, swap at a chunk boundary,
drops counted by cause. Real tiny checkpoints, real engine, fake-free."""

import numpy as np
import pytest

from mail_policy_node.engine.engine import EngineConfig
from mail_policy_node.runtime import PolicyRuntime, RuntimeConfig, load_policy
from mail_policy_node.checkpoint_root import CheckpointRefused
from tests.policy.ckpts import SIZE, make_checkpoint, make_nan_checkpoint


class Msg:
    """The fields of sensor_msgs/Image and JointState that the runtime reads (rclpy's own messages are
    exercised by the node tests)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def image(value, size=SIZE):
    data = np.full((size, size, 3), value, np.uint8).tobytes()
    return Msg(height=size, width=size, encoding="rgb8", step=3 * size, is_bigendian=0, data=data)


def joints(q):
    names = [f"fr3_joint{i}" for i in range(1, 8)] + ["fr3_finger_joint1", "fr3_finger_joint2"]
    return Msg(name=names, position=list(q) + [0.02, 0.02])


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("ckpts")
    make_checkpoint(r / "a", seed=0)
    make_checkpoint(r / "b", seed=1)
    make_checkpoint(r / "one_camera", seed=2, cameras=("agentview",))
    make_nan_checkpoint(r / "nan")
    return r


def feed(rt, clock, step, missing=()):
    for cam in ("agentview", "wrist"):
        if cam not in missing:
            rt.add_image(cam, clock.t, image(step % 200))
    rt.add_joint_state(clock.t + 0.002, joints(np.full(7, 0.01 * step)))


def test_chunks_every_execution_horizon_with_continuous_sequence(root):
    clock = Clock()
    rt = PolicyRuntime(load_policy(str(root), "a", EngineConfig()), RuntimeConfig(rate_hz=10), clock=clock)
    chunks = []
    for step in range(12):
        clock.t += 0.1
        feed(rt, clock, step)
        clock.t += 0.01
        c = rt.tick()
        if c is not None:
            chunks.append((step, c))
    assert [s for s, _ in chunks] == [0, 3, 6, 9]  # J = 3: replan after the chunk is executed
    assert [c.sequence for _, c in chunks] == [0, 1, 2, 3]
    c = chunks[-1][1]
    assert c.actions.shape == (3, 8) and np.isfinite(c.actions).all()
    assert c.policy_id == rt.policy.policy_id and len(c.policy_id) == 16
    assert rt.observations == 12 and rt.status()["latency_p50_ms"] > 0


def test_swap_happens_at_a_chunk_boundary_and_resets_caches(root):
    clock = Clock()
    rt = PolicyRuntime(load_policy(str(root), "a", EngineConfig()), RuntimeConfig(rate_hz=10), clock=clock)
    b = load_policy(str(root), "b", EngineConfig())
    ids = []
    for step in range(10):
        if step == 4:
            assert rt.incompatibilities(b) == []
            rt.request_swap(b)
        clock.t += 0.1
        feed(rt, clock, step)
        clock.t += 0.01
        c = rt.tick()
        if c is not None:
            ids.append((step, c.policy_id, c.sequence))
    a_id = ids[0][1]
    assert [i[0] for i in ids] == [0, 3, 6, 9]  # no chunk missed around the swap
    assert ids[1][1] == a_id and ids[2][1] == b.policy_id != a_id  # step 4 is mid-chunk: swap at step 6
    assert [i[2] for i in ids] == [0, 1, 2, 3]


def test_incompatible_and_refused_checkpoints(root):
    rt = PolicyRuntime(load_policy(str(root), "a", EngineConfig()), RuntimeConfig())
    other = load_policy(str(root), "one_camera", EngineConfig())
    assert any("cameras" in r for r in rt.incompatibilities(other))
    with pytest.raises(CheckpointRefused, match="outside"):
        load_policy(str(root), "../../etc", EngineConfig())
    (root / "trunc").mkdir()
    (root / "trunc" / "config.json").write_text((root / "a" / "config.json").read_text())
    (root / "trunc" / "model.safetensors").write_bytes((root / "a" / "model.safetensors").read_bytes()[:200])
    with pytest.raises(Exception, match="(?i)safetensors|truncat|corrupt"):
        load_policy(str(root), "trunc", EngineConfig())


def test_missing_camera_stale_and_bad_inputs_are_counted_not_run(root):
    clock = Clock()
    rt = PolicyRuntime(load_policy(str(root), "a", EngineConfig()), RuntimeConfig(rate_hz=10), clock=clock)
    for step in range(3):  # the wrist camera never delivers: nothing runs
        clock.t += 0.1
        feed(rt, clock, step, missing=("wrist",))
        assert rt.tick() is None
    assert rt.sync.missing() == ["wrist"] and rt.observations == 0
    rt.add_image("wrist", clock.t + 5.0, image(1))  # stamped in the future
    rt.add_image("wrist", clock.t, image(1, size=0) if False else Msg(height=0, width=0, encoding="rgb8", step=0,
                                                                    is_bigendian=0, data=b""))
    bad = image(3)
    bad.encoding = "yuv422"
    rt.add_image("wrist", clock.t, bad)
    clock.t += 0.01
    assert rt.tick() is None
    d = rt.status()["drops"]
    assert d["future_stamp"] == 1 and d["empty_image"] == 1 and d["bad_image"] == 1
    # refused when they arrive, so each one counts even when a newer frame would have replaced it unused
    short = image(4)
    short.data = bytes(10)
    rt.add_image("agentview", clock.t, short)
    rt.add_image("agentview", clock.t, bad)
    rt.add_image("agentview", clock.t + 0.01, image(5))
    assert rt.status()["drops"]["bad_image"] == 3
    bad_js = joints(np.full(7, np.nan))
    rt.add_joint_state(clock.t, bad_js)
    assert rt.status()["drops"]["bad_joint_state"] == 1


def test_a_clock_step_back_restarts_the_policy_history_instead_of_stalling(root):
    """The host clock steps back 30 s (NTP): every input is then stamped in the new time base. Before
    the fix no chunk came again (the new stamps fell out of the synchroniser's history at once) and
    nothing in the status said why. Now: counted, the history of the synchroniser and of the engine
    restart, and chunks go on in the new time base without a gap in their sequence."""
    clock = Clock()
    rt = PolicyRuntime(load_policy(str(root), "a", EngineConfig()), RuntimeConfig(rate_hz=10), clock=clock)
    chunks = []

    def run(steps):
        for step in range(steps):
            clock.t += 0.1
            feed(rt, clock, step)
            clock.t += 0.01
            c = rt.tick()
            if c is not None:
                chunks.append(c)

    run(7)
    n_before, old_stamp = len(chunks), chunks[-1].stamp
    clock.t -= 30.0
    run(6)
    after = chunks[n_before:]
    assert after, f"no chunk after the clock step; drops {rt.status()['drops']}"
    assert all(c.stamp < old_stamp - 29.0 for c in after)  # only new-base observations behind them
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    s = rt.status()
    assert s["drops"]["sync_time_base_restart"] == 1 and s["drops"]["sync_backward_stamp"] >= 1
    assert s["time_base_restarts"] == 1 and "new time base" in s["time_event"]
    # the engine's history restarted with the first new-base set: a chunk at once, then every J = 3
    assert len(after) == 2 and rt.episode_steps == 4


def test_a_swap_whose_chunks_are_all_nan_is_undone_and_the_old_policy_drives_on(root):
    """The swapped-in checkpoint loads and warms up, but every chunk on real inputs is NaN: after
    failed_chunks refusals in a row the one it replaced runs again, acting on the same observation."""
    clock = Clock()
    rt = PolicyRuntime(load_policy(str(root), "a", EngineConfig()), RuntimeConfig(rate_hz=10, failed_chunks=3),
                       clock=clock)
    nan = load_policy(str(root), "nan", EngineConfig())  # warm-up passed: a blank joint state is 0
    out = []
    for step in range(15):
        if step == 4:
            assert rt.incompatibilities(nan) == []
            rt.request_swap(nan)
        clock.t += 0.1
        feed(rt, clock, step)
        clock.t += 0.01
        c = rt.tick()
        out.append((step, rt.policy.name, c))
    a_id = out[0][2].policy_id
    published = [(step, c.policy_id, c.sequence) for step, _, c in out if c is not None]
    assert all(pid == a_id for _, pid, _ in published)  # nothing of the NaN policy ever left
    assert [seq for _, _, seq in published] == list(range(len(published)))  # no sequence gap
    # swap at the boundary (step 6), refused at 6 and 7 (retried per observation), undone at the third
    assert [name for _, name, _ in out[5:9]] == ["a", "nan", "nan", "a"] and out[8][2] is not None
    assert rt.drops["nan_output"] == 3 and rt.reverts == 1 and rt.error is None
    assert rt.take_reverts() == [("nan", "a")] and rt.take_reverts() == []
    status = rt.status()
    assert "'nan'" in status["last_revert"] and "'a' runs again" in status["last_revert"], status["last_revert"]
    assert status["checkpoint"] == "a"


def test_a_start_up_checkpoint_whose_chunks_are_all_nan_is_an_error(root):
    clock = Clock()
    rt = PolicyRuntime(load_policy(str(root), "nan", EngineConfig()), RuntimeConfig(rate_hz=10, failed_chunks=2),
                       clock=clock)
    errors = []
    for step in range(4):
        clock.t += 0.1
        feed(rt, clock, step)
        clock.t += 0.01
        assert rt.tick() is None
        errors.append(rt.error)
    assert errors[0] is None and "'nan'" in errors[1] and "2 chunks in a row refused" in errors[1], errors
    assert "4 chunks in a row refused" in rt.status()["error"]  # it keeps trying, and says so
    assert rt.reverts == 0 and rt.take_reverts() == []
