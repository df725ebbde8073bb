"""Batched replay (replay/batch.py): bags in lockstep as the rows of one engine batch per checkpoint give
the figures of replaying them one at a time. Real bags, real tiny checkpoints, real engine."""

import json

import numpy as np
import pytest

from mail_policy_node.commands import replay as replay_cmd
from mail_policy_node.replay.metrics import match_recorded
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


def _overlap_rms(results, label: str, dt: float) -> tuple[float, float]:
    """RMS of next - previous chunk where they overlap: (over the first overlapping action, over all of them)."""
    first, every = [], []
    for r in results:
        for e in r.episodes[label]:
            for n in range(1, len(e.chunk_actions)):
                idx = match_recorded(e.chunk_due[n], e.chunk_due[n - 1], dt / 2)
                ok = np.flatnonzero(idx >= 0)
                if len(ok):
                    d = e.chunk_actions[n][ok] - e.chunk_actions[n - 1][idx[ok]]
                    first.append(d[0])
                    every.append(d)
    return float(np.sqrt(np.mean(np.square(first)))), float(np.sqrt(np.mean(np.square(np.concatenate(every)))))


def test_real_time_chunking_replays_as_the_node_runs_it_batched_or_not(bags, lanes_ckpts, tmp_path):
    """`mail-il replay --real-time-chunking`: each DDPM chunk keeps its overlap with the one it replaces, as
    the policy node's parameter does; the batched replay passes every row's committed actions to its batch
    step (it refused them before) and gives the figures of one bag at a time. The chunks then disagree less
    where they overlap (the consistency figure); a BC head has nothing to keep and is unchanged.
    Which actions are kept outright depends on when the chunk reaches the robot: the node measures its compute
    time, replay assumes one (`compute_time`, 0 by default: the bag's clock stands still). It measured it once,
    and batched and alone then froze different actions on a loaded CI host (figures apart by up to 1.2)."""
    ddpm8 = make_checkpoint(tmp_path / "ddpm_j8", preset="d_ma_ddpm", seed=4, history="stream", j=8)
    on, off = ReplayConfig(real_time_chunking=True), ReplayConfig()
    lanes_on = load_lanes([lanes_ckpts[0], ddpm8], on)
    alone = [replay_bag(b, lanes_on, config=on) for b in bags]
    _same(alone, replay_batched(bags, lanes_on, TopicMap(), on, batch=3))
    without = [replay_bag(b, load_lanes([lanes_ckpts[0], ddpm8], off), config=off) for b in bags]
    for a, b in zip(alone, without):
        for ea, eb in zip(a.episodes["window_bc"], b.episodes["window_bc"]):
            np.testing.assert_array_equal(ea.chunk_actions, eb.chunk_actions)
    (first_on, all_on), (first_off, all_off) = (_overlap_rms(r, "ddpm_j8", 0.1) for r in (alone, without))
    print({"first_on": first_on, "first_off": first_off, "all_on": all_on, "all_off": all_off})
    # the next action (pulled hardest; due after the tick, so not kept outright with compute_time 0) agrees;
    # further on the pull fades to 0 (this random tiny model: 0.033 against 3.2, 1.9 against 3.4 over the overlap)
    assert first_on < 0.05 * first_off and all_on < 0.7 * all_off, (first_on, first_off, all_on, all_off)
    # a chunk that reaches the robot one period after its tick keeps the action due then exactly
    late = ReplayConfig(real_time_chunking=True, compute_time=0.1)
    kept = [replay_bag(b, load_lanes([ddpm8], late), config=late) for b in bags]
    first_late, _ = _overlap_rms(kept, "ddpm_j8", 0.1)
    assert first_late < 1e-5 < first_on, (first_late, first_on)
    out = tmp_path / "cmd"
    assert replay_cmd.main([*map(str, bags[:2]), "--checkpoint", ddpm8, "--real-time-chunking", "--compute-time",
                            "0.05", "--out", str(out)]) == 0
    config = json.loads((out / "replay.json").read_text())["config"]
    assert config["real_time_chunking"] is True and config["compute_time"] == 0.05
    with pytest.raises(ValueError, match="compute_time"):
        ReplayConfig(compute_time=-0.01)
