"""`mail-il replay`: bags through the policy node's logic and the engine, compared with the recorded
actions. Real bags (rosbags, both storages, every image encoding), real tiny checkpoints, real engine."""

import json

import numpy as np
import pytest

from mail_policy_node.commands import replay as replay_cmd
from mail_policy_node.data.bags import BagReader, MissingTopicError
from mail_policy_node.engine.engine import EngineConfig, InferenceEngine
from mail_policy_node.engine.inputs import Observation
from mail_policy_node.replay import (IncompatibleCheckpointError, ReplayConfig, TopicMap, load_lanes, replay_bag,
                                     run_replay)
from mail_policy_node.replay import metrics
from tests.replay.bagmaker import DT, write_bag

J = 3  # the tiny checkpoints' chunk length


def direct_chunks(ckpt, written, episode, horizon=1):
    """The engine run directly on the written observation sequence of one episode (fresh engine)."""
    engine = InferenceEngine.from_checkpoint(ckpt, EngineConfig())
    out = []
    frames, states = written["frames"], written["states"][episode]
    for k, ns in enumerate(written["stamps_ns"][episode]):
        obs = Observation(stamp=ns / 1e9, images={c: frames[c][episode][k] for c in frames}, state=states[k])
        engine.observe(obs)
        if k % horizon == 0:
            out.append(engine.act().actions[0])
    return np.asarray(out)


def test_metrics_functions_on_a_hand_made_case():
    due = np.array([[0.0, 0.1, 0.2], [0.1, 0.2, 0.3]])
    actions = np.array([[[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]], [[2.5, 0.0], [3.0, 1.0], [9.0, 9.0]]])
    rec_t = np.array([0.0, 0.1, 0.2])  # nothing recorded at 0.3: the last action is not counted
    rec = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 2.0]])
    err, pos = metrics.pair_errors(due, actions, rec_t, rec, DT / 2)
    np.testing.assert_allclose(err, [[0, 0], [1, 0], [2, -2], [1.5, 0], [2, -1]])
    assert pos.tolist() == [0, 1, 2, 0, 1]
    s = metrics.error_stats(err, ("x", "y"))
    assert s["n"] == 5 and s["max"] == 2.0
    assert s["per_dim"]["x"]["mse"] == pytest.approx((0 + 1 + 4 + 2.25 + 4) / 5)
    assert s["per_dim"]["y"]["mae"] == pytest.approx(3 / 5)
    assert s["mse"] == pytest.approx((11.25 + 5) / 10)
    h = metrics.horizon_stats(err, pos, 3)
    assert [x["n"] for x in h] == [2, 2, 1] and h[2]["mse"] == pytest.approx(4.0)
    diff = metrics.overlap_differences(due, actions, DT)  # chunk 2 vs chunk 1 at t = 0.1, 0.2
    np.testing.assert_allclose(diff, [[0.5, 0.0], [0.0, 1.0]])
    c = metrics.consistency_stats(diff, ("x", "y"))
    assert c["n"] == 2 and c["max"] == 1.0 and c["rms"] == pytest.approx(np.sqrt(1.25 / 4))
    g = metrics.gap_stats([[0.0, 0.1, 0.2, 0.5, 0.6], [5.0, 5.1]], factor=1.5)
    assert g == dict(messages=7, period_s=pytest.approx(0.1), gaps=1, dropped=2, longest_gap_s=pytest.approx(0.3))


def test_replay_equals_engine_and_metrics_equal_direct_computation(tmp_path, ckpts):
    written = write_bag(tmp_path / "bag", episodes=(7, 5))
    lanes = load_lanes([ckpts["a"]], ReplayConfig())
    result = replay_bag(tmp_path / "bag", lanes)
    eps = result.episodes["a"]
    assert [len(e.chunk_actions) for e in eps] == [7, 5]  # one chunk per control step, engine reset per episode
    sq, ab, n = np.zeros(8), np.zeros(8), 0
    for e, ep in enumerate(eps):
        direct = direct_chunks(ckpts["a"], written, e)
        assert np.array_equal(ep.chunk_actions.astype(np.float32), direct)  # bit-exact on CPU
        np.testing.assert_allclose(ep.chunk_due[:, 0], np.asarray(written["stamps_ns"][e]) / 1e9, atol=1e-6)
        rec = np.asarray(written["actions"][e])
        for k in range(len(direct)):  # chunk k, action i is due when action k + i was recorded
            for i in range(J):
                if k + i < len(rec):
                    d = ep.chunk_actions[k, i] - rec[k + i]
                    sq, ab, n = sq + d ** 2, ab + np.abs(d), n + 1
    _, summary = run_replay([tmp_path / "bag"], lanes)
    errors = summary["checkpoints"][0]["overall"]["errors"]
    assert errors["n"] == n
    np.testing.assert_allclose([errors["per_dim"][f"fr3_joint{i}"]["mse"] for i in range(1, 8)], sq[:7] / n, rtol=1e-9)
    assert errors["mae"] == pytest.approx(ab.sum() / (8 * n), rel=1e-9)
    assert summary["speed"]["observations"] == 12 and summary["speed"]["realtime_factor"] > 0


def test_simulator_demo_bag(tmp_path, ckpts):
    from mail_policy_node.commands.demos import record_demo
    from mail_policy_node.data.bags import load_demo
    from mail_policy_node.sim.env import make_task

    env = make_task("reach", render=True, image_size=(32, 32))
    record_demo(env, 0, tmp_path / "demo", episode=0, storage="sqlite3")
    demo = load_demo(tmp_path / "demo", image_size=None)
    result = replay_bag(tmp_path / "demo", load_lanes([ckpts["a"]], ReplayConfig()))
    (ep,) = result.episodes["a"]
    assert ep.info["success"] is True and ep.info["task"] == "reach"
    assert len(ep.chunk_actions) == len(demo) + 1  # the final observation (after the last action) too
    engine = InferenceEngine.from_checkpoint(ckpts["a"], EngineConfig())
    direct = [engine.step(Observation(stamp=t, images={c: demo.images[c][k] for c in demo.images},
                                      state=demo.joint_state[k])).actions[0] for k, t in enumerate(demo.times)]
    assert np.array_equal(ep.chunk_actions[:-1].astype(np.float32), np.asarray(direct))
    np.testing.assert_allclose(ep.recorded, demo.actions)


def test_hand_guided_bag_scores_against_where_the_arm_went(tmp_path, ckpts):
    """A topic map whose action is /joint_states (a hand-guided demonstration has no commands) scores each
    predicted action against the joints measured at its due time. On a simulator demo, where both exist,
    the arm is where it was commanded one dt earlier, so both score nearly alike."""
    from mail_policy_node.commands.demos import record_demo
    from mail_policy_node.data.bags import joint_state_to_vector
    from mail_policy_node.sim.env import make_task

    record_demo(make_task("reach", render=True, image_size=(32, 32)), 0, tmp_path / "demo", episode=0)
    lanes = load_lanes([ckpts["a"]], ReplayConfig())
    by_command, summary_c = run_replay([tmp_path / "demo"], lanes)
    by_joints, summary_j = run_replay([tmp_path / "demo"], lanes, TopicMap(action="/joint_states"))
    (ep_c,), (ep,) = by_command[0].episodes["a"], by_joints[0].episodes["a"]
    with BagReader(tmp_path / "demo") as bag:
        states = list(bag.records(["/joint_states"]))
    assert ep.action_names == tuple(lanes[0].spec.action_names)
    np.testing.assert_allclose(ep.recorded_t, [r.stamp_ns / 1e9 for r in states])  # due when measured
    np.testing.assert_allclose(ep.recorded, [joint_state_to_vector(r.names, r.position) for r in states])
    assert np.array_equal(ep.chunk_actions, ep_c.chunk_actions)  # the same observations, the same chunks
    # the measurement at each command's due time (stamp + dt) is that command, up to the arm's tracking
    at = np.searchsorted(ep.recorded_t, ep_c.recorded_t - 1e-6)
    assert np.all(at < len(ep.recorded_t)) and np.allclose(ep.recorded_t[at], ep_c.recorded_t, atol=1e-6)
    lag = np.abs(ep.recorded[at, :7] - ep_c.recorded[:, :7])
    moved = np.abs(np.diff(ep_c.recorded[:, :7], axis=0))
    assert np.median(lag) < 0.1 * np.median(moved) and lag.max() < 0.01, (np.median(lag), lag.max())
    e_cmd, e_joint = (s["checkpoints"][0]["overall"]["errors"] for s in (summary_c, summary_j))
    assert e_joint["n"] >= e_cmd["n"] and e_joint["mae"] == pytest.approx(e_cmd["mae"], abs=0.01)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("encoding,size", [("rgb8", (32, 32)), ("bgr8", (40, 48)), ("mono8", (32, 32)),
                                           ("jpeg", (48, 48)), ("png", (24, 40))])
def test_every_encoding_storage_and_size(tmp_path, ckpts, encoding, size, storage):
    written = write_bag(tmp_path / "bag", storage=storage, encoding=encoding, episodes=(4,), size=size, events=False)
    result = replay_bag(tmp_path / "bag", load_lanes([ckpts["a"]], ReplayConfig()))
    (ep,) = result.episodes["a"]  # no events: the bag is one episode
    assert result.storage == storage
    assert np.array_equal(ep.chunk_actions.astype(np.float32), direct_chunks(ckpts["a"], written, 0))


def test_two_checkpoints_side_by_side_and_report_files(tmp_path, ckpts, capsys):
    write_bag(tmp_path / "bag", episodes=(6,))
    out = tmp_path / "report"
    rc = replay_cmd.main([str(tmp_path / "bag"), "--checkpoint", ckpts["a"], "--checkpoint", ckpts["b"],
                          "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "replay.json").read_text())
    a, b = report["checkpoints"]
    assert (a["label"], b["label"]) == ("a", "b") and a["policy_id"] != b["policy_id"]
    assert a["overall"]["observations"] == b["overall"]["observations"] == 6
    assert a["overall"]["errors"]["mse"] != b["overall"]["errors"]["mse"]
    # side by side = each alone
    alone = replay_bag(tmp_path / "bag", load_lanes([ckpts["b"]], ReplayConfig())).episodes["b"][0]
    chunks_b = np.load(out / "chunks" / "b.npz")
    assert np.array_equal(chunks_b["actions"], alone.chunk_actions)
    md = (out / "summary.md").read_text()
    assert "| a |" in md and "| b |" in md and "observations/s" in md
    for png in [out / "plots" / "error_histograms.png", out / "plots" / "bag_ep0_actions.png"]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["speed"]["observations_per_s"] > 0 and "x real time" in capsys.readouterr().out


def test_missing_topic_names_it(tmp_path, ckpts, capsys):
    write_bag(tmp_path / "bag", episodes=(3,), cameras=("agentview",))
    lanes = load_lanes([ckpts["a"]], ReplayConfig())
    with pytest.raises(MissingTopicError, match="/camera/wrist/image_raw"):
        replay_bag(tmp_path / "bag", lanes)
    assert replay_cmd.main([str(tmp_path / "bag"), "--checkpoint", ckpts["a"], "--out", str(tmp_path / "o")]) == 1
    assert "/camera/wrist/image_raw" in capsys.readouterr().err


def test_incompatible_checkpoint(tmp_path, ckpts):
    write_bag(tmp_path / "bag", episodes=(3,))
    with pytest.raises(IncompatibleCheckpointError, match="dx"):
        replay_bag(tmp_path / "bag", load_lanes([ckpts["ee_delta"]], ReplayConfig()))


def test_topic_map_and_gaps(tmp_path, ckpts):
    mapping = {"agentview": "/cam_high/compressed", "wrist": "/cam_wrist/image", "joint_states": "/franka/joints",
               "action": "/robot/command"}
    write_bag(tmp_path / "bag", episodes=(10,), encoding="jpeg", topics=mapping,
              drop={"wrist": (3, 4), "joint_states": (7,)})
    (tmp_path / "map.yaml").write_text(
        "cameras: {agentview: /cam_high/compressed, wrist: /cam_wrist/image}\n"
        "joint_states: /franka/joints\naction: /robot/command\n")
    topics = TopicMap.from_yaml(tmp_path / "map.yaml")
    with pytest.raises(MissingTopicError, match="/camera/agentview/image_raw"):
        replay_bag(tmp_path / "bag", load_lanes([ckpts["a"]], ReplayConfig()))
    lanes = load_lanes([ckpts["a"]], ReplayConfig())
    _results, summary = run_replay([tmp_path / "bag"], lanes, topics)
    streams = summary["bags"][0]["streams"]
    assert streams["/cam_wrist/image"]["gaps"] == 1 and streams["/cam_wrist/image"]["dropped"] == 2
    assert streams["/cam_wrist/image"]["longest_gap_s"] == pytest.approx(0.3)
    assert streams["/franka/joints"]["gaps"] == 1 and streams["/franka/joints"]["dropped"] == 1
    assert streams["/cam_high/compressed"]["gaps"] == 0 and streams["/robot/command"]["messages"] == 10
    overall = summary["checkpoints"][0]["overall"]
    assert overall["observations"] == 7  # steps 3, 4 (no wrist frame) and 7 (no joint state) have no set
    assert overall["drops"]["sync_no_new"] == 3


def test_realtime_paces_to_the_recording(tmp_path, ckpts):
    write_bag(tmp_path / "bag", episodes=(6,))
    lanes = load_lanes([ckpts["a"]], ReplayConfig())
    result = replay_bag(tmp_path / "bag", lanes, config=ReplayConfig(realtime=True))
    assert result.duration_s == pytest.approx(0.5) and result.wall_s >= 0.5


def test_rate_zero_ticks_on_every_image_like_the_node(tmp_path, ckpts):
    """rate_hz 0: a tick after each image, once the messages logged with it are in (as the node's tick
    thread finds them): every set gives its chunk at once, the final one included."""
    written = write_bag(tmp_path / "bag", episodes=(6,), events=False)
    lanes = load_lanes([ckpts["a"]], ReplayConfig())
    (ep,) = replay_bag(tmp_path / "bag", lanes, config=ReplayConfig(rate_hz=0)).episodes["a"]
    direct = direct_chunks(ckpts["a"], written, 0)
    assert len(direct) == 6
    assert len(ep.chunk_actions) == 6 and np.array_equal(ep.chunk_actions.astype(np.float32), direct)


def test_joint_names_the_checkpoint_needs(tmp_path, ckpts):
    write_bag(tmp_path / "bag", episodes=(3,), cameras=("agentview", "wrist"), drop={"joint_states": (0, 1, 2)})
    with pytest.raises(MissingTopicError, match="/joint_states"):
        replay_bag(tmp_path / "bag", load_lanes([ckpts["a"]], ReplayConfig()))


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_size_from_the_header(fmt):
    from mail_policy_node.data.images import ImageDecodeError, encode_compressed
    from mail_policy_node.replay.frames import compressed_size

    img = np.zeros((40, 48, 3), np.uint8)
    assert compressed_size(encode_compressed(img, fmt)) == (48, 40)
    with pytest.raises(ImageDecodeError):
        compressed_size(b"\xff\xd8" + bytes(30))


def test_undecodable_frames_are_counted_not_fatal(tmp_path, ckpts):
    """A compressed frame with garbage after a valid header: the tick cannot decode it ("bad_image"),
    one with no header at all is counted on its stream; the replay goes on."""
    from rosbags.rosbag2 import Reader, Writer

    from mail_policy_node.data.bags import STORAGES
    from tests.replay.bagmaker import TS

    write_bag(tmp_path / "src", episodes=(6,), encoding="jpeg", events=False)
    with Reader(tmp_path / "src") as src, Writer(tmp_path / "bag", version=9, storage_plugin=STORAGES["mcap"]) as dst:
        conns = {c.id: dst.add_connection(c.topic, c.msgtype, typestore=TS) for c in src.connections}
        wrist = 0
        for c, t, raw in src.messages():
            if c.topic == "/camera/wrist/image_raw":
                msg = TS.deserialize_cdr(raw, c.msgtype)
                if wrist in (2, 4):
                    keep = 200 if wrist == 2 else 0  # 2: header kept, body garbage; 4: nothing readable
                    msg.data = np.concatenate([msg.data[:keep], np.full(300, 7, np.uint8)])
                    raw = TS.serialize_cdr(msg, c.msgtype)
                wrist += 1
            dst.write(conns[c.id], t, raw)
    _, summary = run_replay([tmp_path / "bag"], load_lanes([ckpts["a"]], ReplayConfig()))
    assert summary["bags"][0]["streams"]["/camera/wrist/image_raw"]["bad_frames"] == 1
    overall = summary["checkpoints"][0]["overall"]
    assert overall["drops"]["bad_image"] == 1 and overall["observations"] == 4


def test_end_events_alone_split_the_bag(tmp_path, ckpts):
    written = write_bag(tmp_path / "bag", episodes=(4, 3), starts=False)
    eps = replay_bag(tmp_path / "bag", load_lanes([ckpts["a"]], ReplayConfig())).episodes["a"]
    assert [len(e.recorded) for e in eps] == [4, 3] and eps[1].info["episode"] == 1
    assert np.array_equal(eps[1].chunk_actions.astype(np.float32), direct_chunks(ckpts["a"], written, 1))


def test_lab_style_bag_replays_as_the_same_recording_under_the_stack_names(tmp_path, ckpts):
    """The map training takes (data.topics_map) replays the lab's bag: renamed topics (episode events too),
    jpeg + bgr8 cameras at 30 Hz, 1 kHz joint states in another order give the stack-named bag's
    observation sets, recorded actions and episodes (its last step too: a joint state logged 1 ms after the
    "end" event does not close the episode before the tick for that step)."""
    from tests.replay.bagmaker import LAB, LAB_MAP, SHUFFLED

    write_bag(tmp_path / "stack", episodes=(6, 4), size=(64, 64))
    write_bag(tmp_path / "lab", episodes=(6, 4), size=(64, 64), topics=LAB,
              encoding={"agentview": "jpeg", "wrist": "bgr8"}, joint_rate_hz=1000, joint_order=SHUFFLED,
              camera_rate_hz=30)
    (tmp_path / "lab.yaml").write_text(json.dumps(LAB_MAP))
    lanes = load_lanes([ckpts["a"]], ReplayConfig())
    stack = replay_bag(tmp_path / "stack", lanes).episodes["a"]
    lab = replay_bag(tmp_path / "lab", lanes, TopicMap.from_yaml(tmp_path / "lab.yaml")).episodes["a"]
    assert [e.observations for e in lab] == [e.observations for e in stack] == [6, 4]  # two episodes: events read
    for s, b in zip(stack, lab):
        np.testing.assert_allclose(b.recorded, s.recorded)
        np.testing.assert_allclose(b.chunk_stamp, s.chunk_stamp)
        assert b.chunk_actions.shape == s.chunk_actions.shape
        # the same joint states reach the engine (these tiny checkpoints hardly look at the pictures; the
        # decoded frames are compared in tests/training/test_topic_map.py)
        assert np.abs(b.chunk_actions - s.chunk_actions).max() < 0.05
    without_episode = TopicMap.from_dict({k: v for k, v in LAB_MAP.items() if k != "episode"})
    assert len(replay_bag(tmp_path / "lab", lanes, without_episode).episodes["a"]) == 1  # no events: one episode
