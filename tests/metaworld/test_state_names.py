"""What the Meta-World demos need from the trainer, without Meta-World itself (runs under either venv): the
joint state taken by name (data.state_names), the action space named after Meta-World's action, and the
FR3 layout (configs, cache keys, specs) unchanged when no names are given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mail_policy_node.benchmarks import metaworld as mw
from mail_policy_node.spec import (ACTION_SPACE_EE_DELTA_POSITION, ACTION_SPACE_JOINT_POSITION,
                                   EE_DELTA_POSITION_NAMES, FR3_JOINT_NAMES, GRIPPER_NAME, FeatureSpec)
from mail_policy_node.data.topics import TopicMap
from mail_policy_node.training.config import ConfigError, TrainConfig
from mail_policy_node.training.episodes import DatasetError, EpisodeSettings, load_bag_episodes
from mail_policy_node.training.trainer import make_spec

ROOT = Path(__file__).resolve().parents[2]
GPU_CONFIG = ROOT / "mail_bringup/config/train/metaworld_dma_ddpm_gpu.yaml"
STEPS = 6


def write_bag(path: Path, images: str = "png") -> Path:
    """A Meta-World-shaped bag written by the benchmark's writer, with state i = row i of 10 * step + column."""
    writer = mw._bag_writer_class()
    rng = np.random.default_rng(0)
    with writer(path, {c: 45.0 for c in mw.CAMERAS}, action_names=mw.ACTION_NAMES, stamp_base_ns=10**18,
                images=images) as bag:
        bag.episode_event("start", 0.0, episode=0, task="push-v3", seed=0)
        for k in range(STEPS):
            t = k * 0.0125
            for cam in mw.CAMERAS:
                bag.image(cam, t, rng.integers(0, 256, (32, 32, 3), np.uint8))
            bag.state(t, 10.0 * k + np.arange(len(mw.BAG_STATE_NAMES)))
            bag.action(t, np.full(4, k / 10))
        bag.episode_event("end", STEPS * 0.0125, episode=0, success=True)
    return path


@pytest.fixture(scope="module")
def sawyer_bag(tmp_path_factory) -> Path:
    return write_bag(tmp_path_factory.mktemp("bag") / "ep0000_seed0")


def settings(images: str = "png", **kw) -> EpisodeSettings:
    return EpisodeSettings(mw.CAMERAS, (32, 32), 0.0125, topics=TopicMap(cameras=mw.camera_topics(images)), **kw)


def test_named_state_entries_are_read_in_the_given_order(sawyer_bag):
    (e,), _ = load_bag_episodes(sawyer_bag, settings(state_names=mw.HAND_STATE_NAMES), None)
    col = [mw.BAG_STATE_NAMES.index(n) for n in mw.HAND_STATE_NAMES]
    assert e.state.shape == (STEPS, 4) and e.action_names == EE_DELTA_POSITION_NAMES
    np.testing.assert_allclose(e.state, 10.0 * np.arange(STEPS)[:, None] + col)
    (r,), _ = load_bag_episodes(sawyer_bag, settings(state_names=mw.HAND_STATE_NAMES[::-1]), None)
    np.testing.assert_allclose(r.state, e.state[:, ::-1])


def test_a_missing_name_or_the_fr3_layout_is_a_clear_error(sawyer_bag):
    with pytest.raises(DatasetError, match=r"lacks \['hand_w'\] of data.state_names"):
        load_bag_episodes(sawyer_bag, settings(state_names=("hand_x", "hand_w")), None)
    with pytest.raises(DatasetError, match=r"lacks joints \['fr3_joint1'.*other names: data.state_names"):
        load_bag_episodes(sawyer_bag, settings(), None)  # the Sawyer's joints are not the FR3's


def test_png_frames_are_the_raw_frames_on_image_transports_topics(sawyer_bag, tmp_path):
    from mail_policy_node.data.bags import COMPRESSED_IMAGE, IMAGE, BagReader

    raw = write_bag(tmp_path / "raw", images="raw")
    with BagReader(sawyer_bag) as png_reader, BagReader(raw) as raw_reader:
        assert {png_reader.topics[t] for t in mw.camera_topics("png").values()} == {COMPRESSED_IMAGE}
        assert {raw_reader.topics[t] for t in mw.camera_topics("raw").values()} == {IMAGE}
    (p,), _ = load_bag_episodes(sawyer_bag, settings(state_names=mw.HAND_STATE_NAMES), None)
    (r,), _ = load_bag_episodes(raw, settings("raw", state_names=mw.HAND_STATE_NAMES), None)
    for cam in mw.CAMERAS:  # lossless
        np.testing.assert_array_equal(p.images[cam], r.images[cam])
    np.testing.assert_array_equal(p.state, r.state)
    np.testing.assert_array_equal(p.actions, r.actions)


def test_cache_key_changes_only_when_state_names_are_set(sawyer_bag, tmp_path):
    fr3 = EpisodeSettings(("agentview", "wrist"), (32, 32), 0.1).key_dict()  # the keys it always had
    assert set(fr3) == {"cameras", "image_size", "dt", "max_gap", "skip_failed", "action_topic", "skip_still_start",
                        "version"}
    assert "state_names" not in settings().key_dict()
    assert settings(state_names=("hand_x",)).key_dict()["state_names"] == ["hand_x"]
    a, hit_a = load_bag_episodes(sawyer_bag, settings(state_names=mw.HAND_STATE_NAMES), tmp_path)
    b, hit_b = load_bag_episodes(sawyer_bag, settings(state_names=mw.HAND_STATE_NAMES), tmp_path)
    assert (hit_a, hit_b) == (False, True) and b[0].state.shape == (STEPS, 4)
    np.testing.assert_array_equal(a[0].state, b[0].state)


def test_config_takes_state_names_and_refuses_what_cannot_work():
    base = dict(data=dict(bags=["x"], cameras=list(mw.CAMERAS), use_joint_state=True))
    cfg = TrainConfig.from_dict({**base, "data": {**base["data"], "state_names": list(mw.HAND_STATE_NAMES)}})
    spec = make_spec(cfg, EE_DELTA_POSITION_NAMES)
    assert spec.action_space == ACTION_SPACE_EE_DELTA_POSITION and spec.state_names == mw.HAND_STATE_NAMES
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    fr3 = make_spec(TrainConfig.from_dict(base), FR3_JOINT_NAMES + (GRIPPER_NAME,))  # unchanged without names
    assert fr3 == FeatureSpec(cameras=fr3.cameras, use_joint_state=True)
    assert fr3.action_space == ACTION_SPACE_JOINT_POSITION
    assert TrainConfig().data.state_names == [] and "state_names" in TrainConfig().to_dict()["data"]
    bad = [({"state_names": ["hand_x", "hand_x"]}, "twice"), ({"state_names": "hand_x"}, "must be a list"),
           ({"state_names": ["hand_x"], "skip_still_start": True}, "skip_still_start")]
    for data, match in bad:
        with pytest.raises(ConfigError, match=match):
            TrainConfig.from_dict({**base, "data": {**base["data"], **data}})
    with pytest.raises(ConfigError, match="relative_actions.*names none of them"):
        TrainConfig.from_dict({"data": {**base["data"], "state_names": list(mw.HAND_STATE_NAMES)},
                               "policy": {"relative_actions": True}})
    with pytest.raises(ValueError, match="relative_actions needs joint_position"):
        FeatureSpec(cameras=spec.cameras, use_joint_state=True, action_space=ACTION_SPACE_EE_DELTA_POSITION,
                    action_names=EE_DELTA_POSITION_NAMES, state_names=mw.HAND_STATE_NAMES, relative_actions=True)
    with pytest.raises(ValueError, match="has the actions"):
        FeatureSpec(action_space=ACTION_SPACE_EE_DELTA_POSITION)  # with the FR3's action names


def test_the_gpu_recipe_reads_as_the_benchmark_says():
    from mail_policy_node.training.config import load_config

    cfg = load_config(GPU_CONFIG)
    d = cfg.data
    assert tuple(d.cameras) == mw.CAMERAS and tuple(d.image_size) == mw.IMAGE_SIZE and d.dt == 0.0125
    assert tuple(d.state_names) == mw.STATE_NAMES and d.use_joint_state
    assert d.topic_map().resolved(d.cameras)["cameras"] == mw.camera_topics("png")  # the demos' default frames
    assert cfg.train.keep_checkpoints >= mw.BEST_K and cfg.train.steps // cfg.train.ckpt_every >= mw.BEST_K
    assert cfg.train.keep_checkpoints * cfg.train.ckpt_every >= cfg.train.steps  # every evaluation kept
    assert (cfg.policy.backbone, cfg.policy.head, cfg.policy.size) == ("D-Ma", "DDPM", "paper")
    for backbone in ("D-Tr", "ED-Ma", "DP-UNet"):  # the switches its comments give
        assert backbone in GPU_CONFIG.read_text()
        load_config(GPU_CONFIG, [f"policy.backbone={backbone}"])


def test_the_evaluator_refuses_a_checkpoint_not_in_metaworlds_spaces():
    from mail_policy_node.spec import CameraSpec

    cams = tuple(CameraSpec(c, 32, 32) for c in mw.CAMERAS)
    ok = FeatureSpec(cameras=cams, use_joint_state=True, action_space=ACTION_SPACE_EE_DELTA_POSITION,
                     action_names=EE_DELTA_POSITION_NAMES, state_names=mw.HAND_STATE_NAMES)
    mw.check_spec(ok, "ok")
    for bad, match in [(FeatureSpec(cameras=cams), "predicts joint_position actions"),  # the FR3's
                       (FeatureSpec(cameras=cams, action_names=EE_DELTA_POSITION_NAMES), "predicts joint_position"),
                       (FeatureSpec(use_joint_state=False, action_space=ACTION_SPACE_EE_DELTA_POSITION,
                                    action_names=EE_DELTA_POSITION_NAMES), "camera"),
                       (FeatureSpec(cameras=cams, use_joint_state=True, action_space=ACTION_SPACE_EE_DELTA_POSITION,
                                    action_names=EE_DELTA_POSITION_NAMES), r"no \['fr3_joint1'")]:
        with pytest.raises(ValueError, match=match):
            mw.check_spec(bad, "ckpt")
