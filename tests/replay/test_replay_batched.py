"""Batched replay (replay/batch.py): bags in lockstep as the rows of one engine batch per checkpoint give
the figures of replaying them one at a time. Real bags, real tiny checkpoints, real engine."""

import json

import numpy as np
import pytest

from mail_policy_node.commands import replay as replay_cmd
from mail_policy_node.replay import ReplayConfig, TopicMap, load_lanes, replay_bag, replay_batched, run_replay
from tests.policy.ckpts import make_checkpoint, make_nan_checkpoint
from tests.replay.bagmaker import write_bag


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    """Five bags that tick differently: other episode counts and lengths, a camera frame missing (no
    observation set at that tick), one without start events."""
    root = tmp_path_factory.mktemp("batched_bags")
    kinds = [dict(episodes=(7, 5)), dict(episodes=(4,), drop={"wrist": [2]}), dict(episodes=(9, 3, 6)),
             dict(episodes=(6,), starts=False), dict(episodes=(5, 8), drop={"agentview": [0, 4]})]
    paths = []
    for i, kw in enumerate(kinds):
        write_bag(root / f"bag{i}", **kw)
        paths.append(root / f"bag{i}")
    return paths


@pytest.fixture(scope="module")
def lanes_ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("batched_ckpts")
    return [make_checkpoint(root / "window_bc", seed=0, k=3),  # BC, K = 3 window
            make_checkpoint(root / "stream_ddpm", preset="d_ma_ddpm", seed=1, history="stream")]  # DDPM noise


def _same(alone, batched):
    for a, b in zip(alone, batched, strict=True):
        assert a.path == b.path and a.episodes.keys() == b.episodes.keys()
        for label in a.episodes:
            assert len(a.episodes[label]) == len(b.episodes[label]), label
            for ea, eb in zip(a.episodes[label], b.episodes[label]):
                assert (ea.ticks, ea.observations, ea.drops) == (eb.ticks, eb.observations, eb.drops), label
                assert np.array_equal(ea.chunk_stamp, eb.chunk_stamp)
                assert ea.chunk_actions.shape == eb.chunk_actions.shape
                # float32 sums in another batch shape: 2e-7 for BC; DDPM's 16 denoising steps of a random tiny
                # model (outputs up to 3) carry it to ~4e-5. Other noise would differ by O(1).
                np.testing.assert_allclose(eb.chunk_actions, ea.chunk_actions, rtol=1e-4, atol=1e-4)
                np.testing.assert_array_equal(ea.recorded, eb.recorded)


@pytest.mark.parametrize("execution_horizon", [1, 0])
def test_batched_replay_gives_the_figures_of_one_bag_at_a_time(bags, lanes_ckpts, execution_horizon):
    config = ReplayConfig(execution_horizon=execution_horizon)
    lanes = load_lanes(lanes_ckpts, config)
    alone = [replay_bag(b, lanes, config=config) for b in bags]
    ticks_without_set = [e.ticks - e.observations for r in alone for e in r.episodes["window_bc"]]
    assert sum(ticks_without_set) > 0  # the missing frames: ticks that took no observation, in some bags only
    batched = replay_batched(bags, lanes, TopicMap(), config, batch=3)  # groups of 3 and 2: engines reused
    _same(alone, batched)
    # and in another order (a bag's figures do not depend on the bags before it: each starts from the seed)
    _same(alone[::-1], replay_batched(bags[::-1], lanes, TopicMap(), config, batch=5))


def test_a_refused_chunk_in_one_row_is_counted_as_alone(bags, lanes_ckpts, tmp_path):
    """A checkpoint whose every chunk is NaN beside a good one: the batch's act fails, each row acts alone,
    the refusals are counted per bag exactly as one bag at a time counts them, and no NaN chunk comes out."""
    config = ReplayConfig()
    lanes = load_lanes([lanes_ckpts[0], make_nan_checkpoint(tmp_path / "nan")], config)
    alone = [replay_bag(b, lanes, config=config) for b in bags[:3]]
    batched = replay_batched(bags[:3], lanes, TopicMap(), config, batch=3)
    _same(alone, batched)
    nan_eps = [e for r in batched for e in r.episodes["nan"]]
    assert sum(e.drops.get("nan_output", 0) for e in nan_eps) > 0 and all(len(e.chunk_actions) == 0 for e in nan_eps)


def test_the_command_batches_by_default_and_reports_the_same(bags, lanes_ckpts, tmp_path, capsys):
    outs = {}
    for batch in ("1", "16"):
        out = tmp_path / f"b{batch}"
        argv = [*map(str, bags), "--checkpoint", lanes_ckpts[0], "--batch", batch, "--out", str(out)]
        assert replay_cmd.main(argv) == 0
        outs[batch] = json.loads((out / "replay.json").read_text())
    one, many = (outs[b]["checkpoints"][0]["overall"] for b in ("1", "16"))
    assert one["observations"] == many["observations"] and one["chunks"] == many["chunks"]
    assert many["errors"]["mse"] == pytest.approx(one["errors"]["mse"], rel=1e-6)
    assert "x real time" in capsys.readouterr().out
    assert replay_cmd.main([str(bags[0]), "--checkpoint", lanes_ckpts[0], "--batch", "0"]) == 1
    with pytest.raises(ValueError, match="one bag at a time"):
        run_replay(bags[:2], load_lanes(lanes_ckpts[:1], ReplayConfig(realtime=True)), TopicMap(),
                   ReplayConfig(realtime=True), batch=2)
