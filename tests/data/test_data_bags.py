"""Demo bags: written with rosbags (mcap and sqlite3), read back typed and time-ordered, aligned by
load_demo, and deserialisable by rclpy with the real sensor_msgs/std_msgs types."""

import json
import os
import tempfile

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from mail_policy_node.commands.demos import SETTLE_STEPS, record_demo
from mail_policy_node.data.bags import (
    BagReader,
    DemoBagWriter,
    EpisodeEventRecord,
    ImageRecord,
    JointStateRecord,
    MissingTopicError,
    load_demo,
)
from mail_policy_node.data.images import encode_compressed
from mail_policy_node.sim import make_task
from mail_policy_node.spec import (
    FR3_FINGER_NAMES,
    FR3_JOINT_NAMES,
    TOPIC_ACTION_COMMAND,
    TOPIC_EPISODE,
    TOPIC_JOINT_STATES,
    camera_image_topic,
    camera_info_topic,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One rendered reach demo recorded by the expert, kept with the env's final state."""
    env = make_task("reach", render=True)
    path = tmp_path_factory.mktemp("bags") / "reach_demo"
    result = record_demo(env, seed=4, path=path, episode=2, stamp_base_ns=1_700_000_000_000_000_000)
    yield path, result, env
    env.close()


def test_demo_bag_has_the_stack_topics(demo):
    path, result, _ = demo
    assert result["success"] and result["bytes"] > 0
    assert list(path.glob("*.mcap")), "default storage is mcap"
    with BagReader(path) as bag:
        topics = bag.topics
        assert result["settle_steps"] == SETTLE_STEPS > 0  # a successful demo goes on after success
        steps = result["steps"] + result["settle_steps"]
        for cam in ("agentview", "wrist"):
            assert topics[camera_image_topic(cam)] == "sensor_msgs/msg/Image"
            assert topics[camera_info_topic(cam)] == "sensor_msgs/msg/CameraInfo"
            assert bag.message_count(camera_image_topic(cam)) == steps + 1
        assert topics[TOPIC_JOINT_STATES] == "sensor_msgs/msg/JointState"
        assert topics[TOPIC_ACTION_COMMAND] == "sensor_msgs/msg/JointState"
        assert topics[TOPIC_EPISODE] == "std_msgs/msg/String"
        assert bag.message_count(TOPIC_ACTION_COMMAND) == steps
        records = list(bag.records())
    times = [r.log_time_ns for r in records]
    assert times == sorted(times)
    events = [r.event for r in records if isinstance(r, EpisodeEventRecord)]
    assert [e["event"] for e in events] == ["start", "end"]
    assert events[0] == {"event": "start", "episode": 2, "task": "reach", "seed": 4, "dt": 0.1, "action_noise": 0.0}
    assert events[1]["success"] is True and events[1]["steps"] == result["steps"]
    assert events[1]["settle_steps"] == SETTLE_STEPS
    image = next(r for r in records if isinstance(r, ImageRecord))
    assert image.image.shape == (128, 128, 3) and image.stamp_ns == 1_700_000_000_000_000_000
    js = next(r for r in records if isinstance(r, JointStateRecord) and r.topic == TOPIC_JOINT_STATES)
    assert js.names == FR3_JOINT_NAMES + FR3_FINGER_NAMES
    assert js.position[7] == js.position[8] == pytest.approx(0.04, abs=0.005)  # each finger = width / 2


def test_load_demo_aligns_observations_and_actions(demo):
    path, result, env = demo
    d = load_demo(path)
    steps = result["steps"] + result["settle_steps"]
    assert len(d) == steps and d.success is True
    assert d.images["agentview"].shape == (steps, 128, 128, 3)
    assert d.actions.shape == (steps, 8) and d.action_names == FR3_JOINT_NAMES + ("gripper",)
    np.testing.assert_allclose(d.times, np.arange(steps) * 0.1, atol=1e-9)
    first = env.reset(seed=4)  # same seed -> the first observation of the demo
    np.testing.assert_allclose(d.joint_state[0], first["joint_state"], atol=1e-12)
    np.testing.assert_array_equal(d.images["wrist"][0], first["images"]["wrist"])
    small = load_demo(path, cameras=("wrist",), image_size=(64, 64))
    assert set(small.images) == {"wrist"} and small.images["wrist"].shape[1:] == (64, 64, 3)


def test_missing_topic_is_named(demo):
    path, _, _ = demo
    with pytest.raises(MissingTopicError, match="/camera/front/image_raw"):
        load_demo(path, cameras=("agentview", "front"))
    with BagReader(path) as bag, pytest.raises(MissingTopicError, match="/mail/nothing"):
        list(bag.records(["/mail/nothing"]))


def test_rclpy_deserialises_every_message(demo):
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="ros-log-"))
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from std_msgs.msg import String

    types = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
             "sensor_msgs/msg/JointState": JointState, "std_msgs/msg/String": String}
    path, _result, _ = demo
    seen = set()
    reader = Reader(path)
    reader.open()
    try:
        for conn, _, raw in reader.messages():
            msg = deserialize_message(bytes(raw), types[conn.msgtype])
            seen.add(conn.topic)
            if conn.msgtype == "sensor_msgs/msg/Image":
                assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", 128, 128, 384)
                assert len(msg.data) == 128 * 128 * 3 and msg.header.stamp.sec > 0
            elif conn.topic == TOPIC_ACTION_COMMAND:
                assert list(msg.name) == [*FR3_JOINT_NAMES, "gripper"] and len(msg.position) == 8
            elif conn.msgtype == "sensor_msgs/msg/CameraInfo":
                assert msg.k[0] > 0 and msg.k[8] == 1.0
            elif conn.msgtype == "std_msgs/msg/String":
                assert json.loads(msg.data)["task"] == "reach"
    finally:
        reader.close()
    assert len(seen) == 7


def test_sqlite3_bag_reads_like_mcap(tmp_path):
    path = tmp_path / "sq"
    rng = np.random.default_rng(0)
    with DemoBagWriter(path, {"agentview": 45.0}, storage="sqlite3", stamp_base_ns=10**18) as bag:
        bag.episode_event("start", 0.0, episode=0)
        for k in range(3):
            t = 0.1 * k
            obs = {"time": t, "images": {"agentview": rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)},
                   "joint_state": np.r_[np.full(7, k, float), 0.06]}
            bag.observation(obs)
            bag.action(t, np.r_[np.full(7, k + 0.5), 0.01])
        bag.episode_event("end", 0.2, episode=0, success=False)
    assert list(path.glob("*.db3"))
    d = load_demo(path, cameras=("agentview",), image_size=(16, 16))
    assert len(d) == 3 and d.success is False
    np.testing.assert_allclose(d.joint_state[:, 0], [0, 1, 2])
    np.testing.assert_allclose(d.joint_state[:, 7], 0.06)
    np.testing.assert_allclose(d.actions[:, 0], [0.5, 1.5, 2.5])
    assert d.images["agentview"].shape == (3, 16, 16, 3)


def test_compressed_images_decode_in_records(tmp_path):
    ts = get_typestore(Stores.ROS2_JAZZY)
    img = np.zeros((24, 24, 3), np.uint8)
    img[..., 2] = 200  # blue
    path = tmp_path / "compressed"
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    conn = writer.add_connection("/camera/wrist/image_raw/compressed", "sensor_msgs/msg/CompressedImage",
                                 typestore=ts)
    header = ts.types["std_msgs/msg/Header"](stamp=ts.types["builtin_interfaces/msg/Time"](sec=1, nanosec=5),
                                             frame_id="wrist")
    for fmt in ("jpeg", "png"):
        msg = ts.types["sensor_msgs/msg/CompressedImage"](
            header=header, format=fmt, data=np.frombuffer(encode_compressed(img, fmt), np.uint8))
        writer.write(conn, 1_000_000_005, ts.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
    writer.close()
    with BagReader(path) as bag:
        recs = list(bag.records())
    assert [type(r) for r in recs] == [ImageRecord, ImageRecord]
    for r in recs:
        assert r.stamp_ns == 1_000_000_005 and r.image.shape == (24, 24, 3)
        assert r.image[..., 2].mean() > 180 and r.image[..., 0].mean() < 20


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="storage"):
        DemoBagWriter(tmp_path / "x", {"wrist": 60.0}, storage="rosbag1")
    with DemoBagWriter(tmp_path / "y", {"wrist": 60.0}) as bag, pytest.raises(ValueError, match="expected 8"):
        bag.action(0.0, np.zeros(3))
    with pytest.raises(FileNotFoundError, match="metadata.yaml"):
        BagReader(tmp_path)


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_custom_types_are_read_from_the_bag_definition(tmp_path, storage):
    """A type the reader's store lacks (e.g. mail_msgs) is registered from the bag's own definition."""
    from rosbags.typesys import get_types_from_msg

    ts = get_typestore(Stores.ROS2_JAZZY)
    ts.register(get_types_from_msg("std_msgs/Header header\nfloat64[] values\nstring note\n", "mail_test/msg/Tiny"))
    types = ts.types
    msg = types["mail_test/msg/Tiny"](
        header=types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=2, nanosec=3), frame_id="x"),
        values=np.array([1.0, 2.0]), note="hi")
    writer = Writer(tmp_path / "tiny", version=9, storage_plugin=storage)
    writer.open()
    conn = writer.add_connection("/tiny", "mail_test/msg/Tiny", typestore=ts)
    writer.write(conn, 5, ts.serialize_cdr(msg, "mail_test/msg/Tiny"))
    writer.close()
    with BagReader(tmp_path / "tiny") as bag:
        (rec,) = list(bag.records())
    assert rec.msgtype == "mail_test/msg/Tiny" and rec.stamp_ns == 2_000_000_003
    assert rec.msg.note == "hi" and list(rec.msg.values) == [1.0, 2.0]


def test_action_noise_is_a_bounded_slow_disturbance_of_the_arm_only():
    from mail_policy_node.commands.demos import ActionNoise

    action = np.linspace(-1.0, 1.0, 8)
    assert ActionNoise(0.0, seed=3)(action) is action  # off: the command itself
    noise = ActionNoise(0.02, seed=3)
    out = np.array([noise(action) - action for _ in range(20000)])
    assert np.all(out[:, 7] == 0.0)  # the gripper is never disturbed
    std = out[200:, :7].std(axis=0)
    assert np.all(np.abs(std - 0.02) < 0.002), std  # stationary spread about sigma
    lag1 = np.mean([np.corrcoef(out[200:-1, j], out[201:, j])[0, 1] for j in range(7)])
    assert 0.7 < lag1 < 0.9  # slowly varying (rho 0.8), not white
    assert np.abs(out).max() <= 2.0 * 0.02 + 1e-12  # bounded: never more than 2 sigma
    again = ActionNoise(0.02, seed=3)
    assert np.array_equal(np.array([again(action) - action for _ in range(50)]), out[:50])  # seeded
    for bad in (-0.01, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="action noise"):
            ActionNoise(bad, seed=0)


def test_noisy_demo_records_the_expert_command_and_executes_the_disturbed_one(demo, tmp_path):
    """The reach expert plans in command space (its IK is warm-started from its own previous command),
    so with the arm disturbed it still commands exactly the clean demo's targets: the bag's actions are
    the clean ones while the measured joints leave the clean path and come back."""
    clean_path, clean_result, _ = demo
    env = make_task("reach", render=True)
    try:
        result = record_demo(env, seed=4, path=tmp_path / "noisy", episode=2,
                             stamp_base_ns=1_700_000_000_000_000_000, action_noise=0.03)
    finally:
        env.close()
    clean, noisy = load_demo(clean_path, image_size=(16, 16)), load_demo(tmp_path / "noisy", image_size=(16, 16))
    n = min(len(clean), len(noisy))
    assert n > 10
    assert np.allclose(noisy.actions[:n], clean.actions[:n], atol=1e-9)  # labels: the expert's commands
    off_path = np.abs(noisy.joint_state[:n, :7] - clean.joint_state[:n, :7]).max()
    assert 0.01 < off_path < 0.2  # the arm really was pushed off the clean path, and not far
    start = next(e for e in noisy.events if e["event"] == "start")
    assert start["action_noise"] == 0.03 and clean.events[0]["action_noise"] == 0.0
    assert result["success"] == clean_result["success"]


def test_demos_command_refuses_a_bad_action_noise(tmp_path):
    from mail_policy_node.commands import demos

    with pytest.raises(SystemExit, match="action-noise"):
        demos.main(["--task", "reach", "--episodes", "1", "--out", str(tmp_path), "--action-noise", "-0.1"])
