"""One topic map for everything that reads bags: a lab's recording (other topic names, jpeg and bgr8
cameras, 1 kHz joint states in another order, frames between the control steps) trains as the same
recording under the stack's names; data folders of links to bags; clear errors for a map's missing topic.
Real rosbag2 files (tests/replay/bagmaker.py), real datasets, a real (tiny) training run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml

from mail_policy_node.commands import train as train_cmd
from mail_policy_node.data.bags import load_demo
from mail_policy_node.data.images import resize_to_model
from mail_policy_node.data.topics import TopicMap
from mail_policy_node.training.config import ConfigError, DataConfig, load_config
from mail_policy_node.training.dataset import DemoDataset
from mail_policy_node.training.episodes import DatasetError, find_bags
from tests.replay.bagmaker import LAB, LAB_MAP, SHUFFLED, expected_rgb, frame, write_bag

from .conftest import tiny_config

EPISODES = (12, 9)  # steps of the two episodes in every bag
NATIVE, MODEL = (64, 64), [32, 32]


def write_pair(root, n_bags=2):
    """The same recording twice: under the stack's names (rgb8, 7 + 2 joints in order, one per step) and
    as a lab records it (renamed topics, jpeg + bgr8, 1 kHz joint states shuffled, 30 Hz cameras)."""
    for i in range(n_bags):
        write_bag(root / "stack" / f"bag{i}", episodes=EPISODES, size=NATIVE)
        write_bag(root / "lab" / f"bag{i}", episodes=EPISODES, size=NATIVE, topics=LAB,
                  encoding={"agentview": "jpeg", "wrist": "bgr8"}, joint_rate_hz=1000, joint_order=SHUFFLED,
                  camera_rate_hz=30)
    (root / "lab.yaml").write_text(yaml.safe_dump(LAB_MAP))
    return root / "stack", root / "lab", root / "lab.yaml"


def _dataset(bags, cache, **kw) -> DemoDataset:
    return DemoDataset(DataConfig(bags=[str(bags)], image_size=MODEL, cache_dir=None if cache is None else str(cache),
                                  use_joint_state=True, **kw), 2, 3)


def test_lab_style_bags_give_the_dataset_of_the_same_recording_under_the_stack_names(tmp_path):
    stack, lab, lab_yaml = write_pair(tmp_path)
    with pytest.raises(DatasetError, match="lacks topic"):  # without the map: nothing to read
        _dataset(lab, tmp_path / "cache")
    a = _dataset(stack, tmp_path / "cache")
    b = _dataset(lab, tmp_path / "cache", topics_map=str(lab_yaml))
    assert [len(e) for e in a.episodes] == [len(e) for e in b.episodes] == list(EPISODES) * 2
    assert a.n_windows("train") == b.n_windows("train") and a.action_names == b.action_names
    jpeg_mean = []
    for ea, eb in zip(a.episodes, b.episodes):
        np.testing.assert_allclose(eb.actions, ea.actions, atol=1e-6)
        # the 1 kHz state named in another order, the fingers summed to the width: the step's own sample
        np.testing.assert_allclose(eb.state, ea.state, atol=1e-6)
        np.testing.assert_array_equal(eb.images["wrist"], ea.images["wrist"])  # bgr8: lossless
        diff = np.abs(eb.images["agentview"].astype(int) - ea.images["agentview"])
        jpeg_mean.append(diff.mean())
        assert diff.mean() < 6  # jpeg's loss only: a frame from between the steps would be far off
        assert eb.info == ea.info  # episode events (episode index, success) from the renamed topic
    # exactly what decoding the jpeg gives, resized by the stack's rule
    e0 = b.episodes[0]
    for k in (0, 5, 11):
        want = resize_to_model(expected_rgb(frame("agentview", 0, k, *NATIVE), "jpeg"), *MODEL)
        np.testing.assert_array_equal(e0.images["agentview"][k], want)
    np.testing.assert_allclose(b.stats.action_mean, a.stats.action_mean, atol=1e-6)
    np.testing.assert_allclose(b.stats.state_std, a.stats.state_std, atol=1e-6)
    batch_a, batch_b = a.window_batch(np.arange(6)), b.window_batch(np.arange(6))
    np.testing.assert_allclose(batch_b["actions"], batch_a["actions"], atol=1e-6)
    np.testing.assert_allclose(batch_b["state"], batch_a["state"], atol=1e-6)
    assert b.describe()["topics"]["cameras"] == LAB_MAP["cameras"]
    assert a.describe()["topics"]["joint_states"] == "/joint_states"
    # the cache keeps the two apart (same settings, other topics) and serves both again
    assert _dataset(lab, tmp_path / "cache", topics_map=str(lab_yaml)).cache_hits == 2
    assert _dataset(stack, tmp_path / "cache").cache_hits == 2
    # load_demo reads through the same map
    da = load_demo(stack / "bag0", image_size=tuple(MODEL))
    db = load_demo(lab / "bag0", image_size=tuple(MODEL), topics=TopicMap.from_yaml(lab_yaml))
    np.testing.assert_allclose(db.joint_state, da.joint_state, atol=1e-9)
    np.testing.assert_allclose(db.actions, da.actions)
    assert len(db.events) == len(da.events) == 4
    print(f"samples {sum(len(e) for e in b.episodes)}; jpeg mean abs diff {np.round(jpeg_mean, 2).tolist()}")


def test_inline_keys_over_the_file_and_action_topic(tmp_path):
    _stack, lab, lab_yaml = write_pair(tmp_path, n_bags=1)
    # data.topics over data.topics_map: one camera renamed inline, the rest from the file
    (tmp_path / "partial.yaml").write_text(yaml.safe_dump({"cameras": {"agentview": LAB["agentview"]},
                                                           "episode": LAB["episode"]}))
    inline = {"cameras": {"wrist": LAB["wrist"]}, "joint_states": LAB["joint_states"], "action": LAB["action"]}
    d = _dataset(lab, None, topics_map=str(tmp_path / "partial.yaml"), topics=inline)
    assert d.settings.topics.resolved(("agentview", "wrist")) == {**LAB_MAP}
    assert len(d.episodes) == 2
    # data.action_topic is the map's action; naming another topic than the map's is an error
    assert DataConfig(action_topic="/joint_states", topics={"joint_states": "/joint_states"}).topic_map().action \
        == "/joint_states"
    with pytest.raises(ConfigError, match="name different topics"):
        DataConfig(action_topic="/joint_states", topics_map=str(lab_yaml)).validate()
    with pytest.raises(ConfigError, match="unknown topic map keys"):
        DataConfig(topics={"camera": {}}).validate()
    with pytest.raises(ConfigError, match="does not exist"):
        DataConfig(topics_map=str(tmp_path / "nope.yaml")).validate()
    # a training config is a map file too (what replay's --topics-map takes)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"topics_map": str(lab_yaml), "topics": {"action": "/other/command"}}}))
    assert TopicMap.from_yaml(cfg) == TopicMap.from_dict({**LAB_MAP, "action": "/other/command"})
    assert TopicMap.from_yaml(lab_yaml) == TopicMap.from_dict(LAB_MAP)


def test_a_mapped_topic_missing_from_a_bag_is_named_with_the_bag(tmp_path):
    _stack, lab, lab_yaml = write_pair(tmp_path, n_bags=1)
    with pytest.raises(DatasetError) as e:
        _dataset(lab, None, topics_map=str(lab_yaml), topics={"cameras": {"wrist": "/cam_wrist/missing"}})
    msg = str(e.value)
    assert "/cam_wrist/missing" in msg and "camera 'wrist'" in msg and str(lab / "bag0") in msg
    assert LAB["agentview"] in msg  # what the bag has
    # a topic of the wrong type: named too
    wrong = r"/franka/joint_states \(camera 'wrist'\) carries sensor_msgs/msg/JointState"
    with pytest.raises(DatasetError, match=wrong):
        _dataset(lab, None, topics_map=str(lab_yaml), topics={"cameras": {"wrist": LAB["joint_states"]}})


def test_find_bags_follows_links_once_and_orders_by_link_name(tmp_path):
    store = tmp_path / "store"
    for name in ("x", "y", "z"):
        write_bag(store / "nested" / name, episodes=(3,))
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(store / "nested" / "z", data / "a_first")  # a link to a bag
    os.symlink(store / "nested" / "x", data / "b_second")
    os.symlink(store / "nested" / "x", data / "c_again")  # the same bag twice: once
    (data / "more").mkdir()
    os.symlink(store / "nested", data / "more" / "all")  # a link to a folder of bags (x again, y)
    os.symlink(data, data / "more" / "loop")  # a cycle
    os.symlink(tmp_path / "gone", data / "broken")  # a dangling link: ignored
    bags = find_bags([data])
    assert bags == [data / "a_first", data / "b_second", data / "more" / "all" / "y"]
    assert sorted(os.path.realpath(b) for b in bags) == [str((store / "nested" / n).resolve()) for n in "xyz"]
    assert find_bags([data / "a_first"]) == [data / "a_first"]


def test_train_command_with_a_topics_map_on_a_folder_of_links(tmp_path, capsys):
    _stack, lab, lab_yaml = write_pair(tmp_path)
    links = tmp_path / "links"
    links.mkdir()
    for i, bag in enumerate(sorted(lab.iterdir())):
        os.symlink(bag, links / f"demo{i:03d}")
    os.symlink(links, links / "self")  # a cycle in the data folder
    cfg = tiny_config([links], tmp_path / "run", tmp_path / "cache")
    cfg["data"]["image_size"] = MODEL
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps(cfg))
    assert train_cmd.main([str(path), "train.steps=1", "--no-progress"]) == 2  # stack names: not in these bags
    assert "lacks topic(s) ['/camera/agentview/image_raw'" in capsys.readouterr().err
    assert train_cmd.main([str(path), "train.steps=1", f"data.topics_map={lab_yaml}", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "4/4 episodes from 2 bags" in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["dataset"]["topics"]["cameras"] == LAB_MAP["cameras"]
    assert summary["dataset"]["first_episode"] == str(links / "demo000")
    # the config keys on the command line, one by one, are the same map
    keys = [f"data.topics.cameras.{c}={t}" for c, t in LAB_MAP["cameras"].items()] + \
           [f"data.topics.{k}={LAB[k]}" for k in ("joint_states", "action", "episode")]
    from_file = load_config(path, [f"data.topics_map={lab_yaml}"]).data.topic_map()
    assert load_config(path, keys).data.topic_map() == from_file
