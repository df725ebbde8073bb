"""Dataset: alignment against what DemoBagWriter recorded, episode cutting, cache, split, errors."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from mail_policy_node.training import episodes as episodes_mod
from mail_policy_node.training.config import DataConfig
from mail_policy_node.training.dataset import DemoDataset
from mail_policy_node.training.episodes import DatasetError, EpisodeSettings, load_bag_episodes

from mail_policy_node.data.bags import ARM_ACTION_NAMES

from .conftest import CAMERAS, write_bag

SETTINGS = EpisodeSettings(CAMERAS, (32, 32), 0.1)


def _data(bags, cache, **kw) -> DataConfig:
    return DataConfig(bags=[str(b) for b in bags], image_size=[32, 32], cache_dir=str(cache), **kw)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_episode_rows_line_up_with_recorded_steps(tmp_path, storage):
    bag = write_bag(tmp_path / "b", lengths=(12,), storage=storage)
    (ep,), hit = load_bag_episodes(bag, SETTINGS, None)
    assert not hit and len(ep) == 12
    steps = np.arange(12)
    np.testing.assert_allclose(ep.actions[:, 0], steps)  # action k was recorded at step k
    np.testing.assert_allclose(ep.actions[:, 1], steps + 0.1, atol=1e-6)
    np.testing.assert_allclose(ep.state[:, 0], steps / 100, atol=1e-7)  # same-stamp joint state
    for ci, cam in enumerate(CAMERAS):
        np.testing.assert_array_equal(ep.images[cam][:, 0, 0, 0], (10 * steps + ci) % 256)
    assert ep.info["success"] is True and ep.info["task"] == "synthetic"


def test_hand_guided_demo_actions_are_the_joints_measured_one_step_later(tmp_path):
    bag = write_bag(tmp_path / "b", lengths=(12,), actions=False)  # cameras, joint states, no commands
    with pytest.raises(DatasetError, match="empty: no messages on /mail/action_command"):
        load_bag_episodes(bag, SETTINGS, None)
    settings = EpisodeSettings(CAMERAS, (32, 32), 0.1, action_topic="/joint_states")
    (ep,), _ = load_bag_episodes(bag, settings, None)
    assert ep.action_names == ARM_ACTION_NAMES
    # the measurement at step 0 has no observation a step earlier: 11 rows, observations of steps 0..10
    steps = np.arange(11)
    np.testing.assert_allclose(ep.state[:, 0], steps / 100, atol=1e-7)
    np.testing.assert_allclose(ep.actions[:, 0], (steps + 1) / 100, atol=1e-7)  # where joint 1 was a step later
    np.testing.assert_allclose(ep.actions[:, 7], 0.04, atol=1e-7)  # gripper width from the two fingers
    for ci, cam in enumerate(CAMERAS):
        np.testing.assert_array_equal(ep.images[cam][:, 0, 0, 0], (10 * steps + ci) % 256)
    assert settings.key_dict() != SETTINGS.key_dict()  # a cache entry per action topic


def test_still_start_of_a_hand_guided_demo_is_skipped(tmp_path):
    bag = write_bag(tmp_path / "b", lengths=(15,), actions=False, still=6)  # 6 still steps, then moves
    guided = EpisodeSettings(CAMERAS, (32, 32), 0.1, action_topic="/joint_states")
    (ep,), _ = load_bag_episodes(bag, guided, None)
    assert len(ep) == 14 and np.count_nonzero(ep.actions[:, 0] == ep.state[:, 0]) == 6  # still: action = state
    (ep,), _ = load_bag_episodes(bag, dataclasses.replace(guided, skip_still_start=True), None)
    assert len(ep) == 8  # from the last still step on: a still arm observed, the first move its action
    np.testing.assert_allclose(ep.state[:2, 0], [0.0, 0.01], atol=1e-7)
    np.testing.assert_allclose(ep.actions[:2, 0], [0.01, 0.02], atol=1e-7)
    assert ep.images["agentview"][0, 0, 0, 0] == 10 * 6  # the frame of step 6
    moving = write_bag(tmp_path / "m", lengths=(12,))  # moves from the first step: nothing dropped
    (ep,), _ = load_bag_episodes(moving, dataclasses.replace(SETTINGS, skip_still_start=True), None)
    assert len(ep) == 12


def test_windows_and_episode_sequences(tmp_path):
    bag = write_bag(tmp_path / "b", lengths=(10,))
    ds = DemoDataset(_data([bag], tmp_path / "cache", val_fraction=0.0), obs_horizon=3, action_horizon=4)
    assert ds.n_windows() == 10  # padded: one window per step
    b = ds.window_batch(np.arange(10))
    assert b["images"]["wrist"].shape == (10, 3, 32, 32, 3) and b["actions"].shape == (10, 4, 8)
    for t in range(10):
        obs = np.clip(np.arange(t - 2, t + 1), 0, 9)  # first frame repeated before the start
        act = np.clip(np.arange(t, t + 4), 0, 9)  # targets start at the current step; last action repeated
        np.testing.assert_array_equal(b["images"]["agentview"][t, :, 0, 0, 0], (10 * obs) % 256)
        np.testing.assert_allclose(b["state"][t, :, 0], obs / 100, atol=1e-7)
        np.testing.assert_allclose(b["actions"][t, :, 0], act)
    full = DemoDataset(_data([bag], tmp_path / "cache", val_fraction=0.0, window_padding=False), 3, 4)
    assert full.n_windows() == 10 - (3 + 4 - 1) + 1  # K + J - 1 steps per window
    np.testing.assert_allclose(full.window_batch(np.array([0]))["actions"][0, :, 0], [2, 3, 4, 5])

    e = ds.episode_batch(np.array([0]))
    assert e["actions"].shape == (1, 10, 4, 8)
    np.testing.assert_allclose(e["actions"][0, :, :, 0], np.clip(np.arange(10)[:, None] + np.arange(4), 0, 9))
    np.testing.assert_array_equal(e["images"]["wrist"][0, :, 0, 0, 0], (10 * np.arange(10) + 1) % 256)


def test_relative_actions_are_offsets_from_the_current_state(tmp_path):
    # Every target of the chunk at step t minus the joint state of step t (arm joints; the gripper
    # absolute), in windows and whole episodes alike, and the statistics are those of the offsets.
    bag = write_bag(tmp_path / "b", lengths=(10,))
    absolute = DemoDataset(_data([bag], tmp_path / "cache", val_fraction=0.0), 3, 4)
    relative = DemoDataset(_data([bag], tmp_path / "cache", val_fraction=0.0), 3, 4, relative_actions=True)
    rows = np.arange(10)
    a, r = absolute.window_batch(rows), relative.window_batch(rows)
    current = a["state"][:, -1]  # (10, 8): the state of step t
    np.testing.assert_allclose(r["actions"][..., :7], a["actions"][..., :7] - current[:, None, :7], atol=1e-6)
    np.testing.assert_array_equal(r["actions"][..., 7], a["actions"][..., 7])
    ea, er = absolute.episode_batch(np.array([0])), relative.episode_batch(np.array([0]))
    np.testing.assert_allclose(er["actions"][0, ..., :7], ea["actions"][0, ..., :7] - ea["state"][0, :, None, :7],
                               atol=1e-6)
    offsets = er["actions"][0].reshape(-1, 8)
    np.testing.assert_allclose(relative.stats.action_mean, offsets.mean(0), atol=1e-6)
    np.testing.assert_allclose(relative.stats.action_std, offsets.std(0), atol=1e-6)


def test_episode_batch_pads_shorter_episodes_and_masks_them(bag_dir, tmp_path):
    ds = DemoDataset(_data([bag_dir], tmp_path / "cache", val_fraction=0.0), 1, 3)
    e = ds.episode_batch(np.array([0, 4]))  # lengths 8 and 12
    assert e["actions"].shape[:2] == (2, 12)
    assert e["action_mask"][0, :8].all() and not e["action_mask"][0, 8:].any() and e["action_mask"][1].all()


def test_one_bag_with_several_episodes_is_cut_at_events_and_failed_ones_dropped(tmp_path):
    bag = write_bag(tmp_path / "b", lengths=(5, 7, 6), success=[True, False, True])
    eps, _ = load_bag_episodes(bag, SETTINGS, None)
    assert [len(e) for e in eps] == [5, 6]
    np.testing.assert_allclose(eps[1].actions[:, 0], np.arange(6))
    kept = load_bag_episodes(bag, EpisodeSettings(CAMERAS, (32, 32), 0.1, skip_failed=False), None)[0]
    assert [len(e) for e in kept] == [5, 7, 6]
    no_events = write_bag(tmp_path / "n", lengths=(4, 5), events=False, gap_s=3.0)  # cut at the time gap
    assert [len(e) for e in load_bag_episodes(no_events, SETTINGS, None)[0]] == [4, 5]


def test_cache_hit_and_invalidation(tmp_path, monkeypatch):
    bag = write_bag(tmp_path / "b", lengths=(6,))
    cache = tmp_path / "cache"
    first, hit = load_bag_episodes(bag, SETTINGS, cache)
    assert not hit and len(list(cache.iterdir())) == 1
    calls = []
    real = episodes_mod.read_bag
    monkeypatch.setattr(episodes_mod, "read_bag", lambda *a: calls.append(a) or real(*a))
    again, hit = load_bag_episodes(bag, SETTINGS, cache)
    assert hit and not calls  # no decoding
    np.testing.assert_array_equal(again[0].images["wrist"], first[0].images["wrist"])
    assert isinstance(again[0].images["wrist"], np.memmap) or again[0].images["wrist"].base is not None

    _, hit = load_bag_episodes(bag, EpisodeSettings(CAMERAS, (48, 48), 0.1), cache)  # settings changed
    assert not hit and len(calls) == 1
    entries = list(cache.iterdir())
    assert len(entries) == 1  # the stale entry of this bag was removed

    data_file = next(p for p in bag.iterdir() if p.suffix == ".mcap")
    st = data_file.stat()
    os.utime(data_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the bag changed on disk
    _, hit = load_bag_episodes(bag, SETTINGS, cache)
    assert not hit and len(calls) == 2


def test_split_by_episode_fraction_and_statistics(bag_dir, tmp_path):
    ds = DemoDataset(_data([bag_dir], tmp_path / "cache", val_fraction=0.2), 2, 3)
    assert [len(e) for e in ds.train] == [8, 9, 10, 11] and [len(e) for e in ds.val] == [12]
    assert ds.n_windows("train") == 8 + 9 + 10 + 11 and ds.n_windows("val") == 12
    assert {e.source for e in ds.train}.isdisjoint({e.source for e in ds.val})
    train_actions = np.concatenate([e.actions for e in ds.train])
    np.testing.assert_allclose(ds.stats.action_mean, train_actions.mean(0), rtol=1e-6)  # training split only
    np.testing.assert_allclose(ds.stats.action_max[0], 10)

    part = DemoDataset(_data([bag_dir], tmp_path / "cache", val_fraction=0.0, fraction=0.4), 2, 3)
    assert [e.source.rsplit("/", 1)[-1] for e in part.episodes] == ["ep0", "ep1"]  # the first 40 %
    assert part.cache_hits == 5 and part.episodes_found == 5


def test_empty_bag_is_a_clear_error(tmp_path):
    bag = write_bag(tmp_path / "empty", lengths=(0,))
    with pytest.raises(DatasetError, match="empty: no messages on /mail/action_command"):
        DemoDataset(_data([bag], tmp_path / "cache"), 1, 2)
    with pytest.raises(DatasetError, match="no rosbag2 folders"):
        (tmp_path / "nothing").mkdir()
        DemoDataset(_data([tmp_path / "nothing"], tmp_path / "c2"), 1, 2)


def test_missing_topic_names_the_topic(tmp_path):
    bag = write_bag(tmp_path / "b", cameras=("agentview",))
    with pytest.raises(DatasetError, match="/camera/wrist/image_raw"):
        DemoDataset(_data([bag], tmp_path / "cache"), 1, 2)


def test_mismatched_action_dimensions_across_bags(tmp_path):
    a = write_bag(tmp_path / "a")
    b = write_bag(tmp_path / "b", action_names=tuple(f"j{i}" for i in range(7)))
    with pytest.raises(DatasetError, match="disagree on the action dimensions.*7 values.*8 values"):
        DemoDataset(_data([a, b], tmp_path / "cache"), 1, 2)
