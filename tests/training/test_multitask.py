"""Multi-task training (data.tasks): each episode's goal is the one-hot of its start event's task, fraction
and validation split are per task, the checkpoint names its tasks, and evaluation and the runtime give the
policy the task's goal (refusing a task it does not know, or none). Real bags (the project's recorder:
`record_demo` of `mail-il demos`, or `DemoBagWriter` for bags whose contents are chosen), real training,
real safetensors checkpoints."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mail_policy_node.data.bags import DemoBagWriter
from mail_policy_node.spec import FeatureSpec
from mail_policy_node.training.config import ConfigError, TrainConfig, load_config
from mail_policy_node.training.dataset import DemoDataset, to_torch
from mail_policy_node.training.episodes import DatasetError

from .conftest import CAMERAS, DT, frame, tiny_config, write_bag

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "mail_bringup/config/train/suite_dma_bc_cpu.yaml"


def write_task_bag(path: Path, task: str | None, n: int = 6, value: float = 0.0, seed: int = 0) -> Path:
    """One episode of ``n`` steps whose start event names ``task`` (None: no task); the same frames and
    joint states whatever the task, and every action is ``value`` in every dimension."""
    with DemoBagWriter(path, {c: 45.0 for c in CAMERAS}, stamp_base_ns=1_000_000_000_000) as bag:
        bag.episode_event("start", 0.0, episode=0, seed=seed, **({} if task is None else {"task": task}))
        for k in range(n):
            for ci, c in enumerate(CAMERAS):
                bag.image(c, k * DT, frame(k, ci))
            bag.joint_state(k * DT, np.r_[k / 100.0, np.zeros(6), 0.04])
            bag.action(k * DT, np.full(8, value))
        bag.episode_event("end", n * DT, episode=0, success=True)
    return path


def data_config(bags, cache, **kw) -> TrainConfig:
    d = dict(bags=[str(b) for b in bags], image_size=[32, 32], use_joint_state=True, cache_dir=str(cache), **kw)
    return TrainConfig.from_dict(dict(data=d)).data


# ---- configuration and FeatureSpec --------------------------------------------------------------------------
def test_task_lists_are_checked_and_empty_by_default(tmp_path):
    assert TrainConfig().data.tasks == []
    for bad, why in (([" reach", "reach", "reach"], "twice"), (["reach", 3], "list of task names"),
                     ("reach", "list of task names"), ([""], "list of task names")):
        with pytest.raises(ConfigError, match=why):
            TrainConfig.from_dict(dict(data=dict(tasks=bad)))
    cfg = load_config(SUITE)  # the suite's config names the four simulated tasks, one bag folder each
    assert cfg.data.tasks == ["reach", "push", "pick_place", "memory"]
    assert [Path(b).name for b in cfg.data.bags] == cfg.data.tasks


def test_feature_spec_records_task_names_and_old_specs_are_unchanged():
    spec = FeatureSpec(goal_embedding_dim=2, task_names=("reach", "push"))
    d = spec.to_dict()
    assert d["task_names"] == ["reach", "push"] and FeatureSpec.from_dict(json.loads(json.dumps(d))) == spec
    assert spec.task_goal("push") == (0.0, 1.0) and spec.task_goal("reach") == (1.0, 0.0)
    with pytest.raises(ValueError, match=r"'pick_place' is not one .*\['reach', 'push'\]"):
        spec.task_goal("pick_place")
    with pytest.raises(ValueError, match="name the one to do"):
        spec.task_goal("")
    # a single-task spec writes the fields it always wrote (config.json unchanged) and takes no task goal
    assert "task_names" not in FeatureSpec().to_dict() and FeatureSpec().task_goal("push") is None
    assert FeatureSpec.from_dict(FeatureSpec(goal_embedding_dim=4).to_dict()).task_names == ()
    for kw, why in ((dict(goal_embedding_dim=2, task_names=("a", "a")), "duplicate"),
                    (dict(goal_embedding_dim=3, task_names=("a", "b")), "goal_embedding_dim 2"),
                    (dict(goal_embedding_dim=0, task_names=("a",)), "goal_embedding_dim 1"),
                    (dict(goal_embedding_dim=1, task_names=("",)), "names of 1..64")):
        with pytest.raises(ValueError, match=why):
            FeatureSpec(**kw)
    with pytest.raises(ValueError, match="list of names"):
        FeatureSpec.from_dict({"goal_embedding_dim": 2, "task_names": "ab"})


def test_single_task_checkpoints_are_written_and_read_as_before(tmp_path):
    from mail_policy_node.model.checkpoint import load_checkpoint
    from mail_policy_node.model.policy import PolicyConfig
    from tests.policy.ckpts import make_checkpoint

    # the shipped checkpoint's config.json, written before relative_actions and task_names existed
    shipped = json.loads((REPO / "mail_bringup/checkpoints/reach_dma_small/config.json").read_text())["policy"]
    spec = PolicyConfig.from_dict(shipped).spec
    assert spec.task_names == () and spec.goal_embedding_dim == 0
    now = json.loads(json.dumps(spec.to_dict()))
    assert {k: v for k, v in now.items() if k in shipped["spec"]} == shipped["spec"]
    assert set(now) - set(shipped["spec"]) == {"relative_actions"}
    # a single-task checkpoint saved now: the spec fields it always had, and it loads
    make_checkpoint(tmp_path / "a")
    saved = json.loads((tmp_path / "a" / "config.json").read_text())["policy"]["spec"]
    assert set(saved) == set(FeatureSpec.__dataclass_fields__) - {"task_names"}
    assert load_checkpoint(tmp_path / "a").cfg.spec.task_names == ()


# ---- the dataset ------------------------------------------------------------------------------------------
def test_goals_fraction_and_validation_split_are_per_task(tmp_path):
    # bags sorted by path interleave the tasks: 4 "up" episodes and 8 "down" ones
    root = tmp_path / "bags"
    tasks = ["up" if i % 3 == 0 else "down" for i in range(12)]
    for i, task in enumerate(tasks):
        write_task_bag(root / f"ep{i:02d}", task, n=5 + i % 2, seed=i)
    cfg = data_config([root], tmp_path / "cache", tasks=["up", "down"], fraction=0.5, val_fraction=0.25)
    ds = DemoDataset(cfg, obs_horizon=1, action_horizon=2)
    seeds = lambda eps: [e.info["seed"] for e in eps]  # noqa: E731
    up = [i for i, t in enumerate(tasks) if t == "up"]
    down = [i for i, t in enumerate(tasks) if t == "down"]
    # the first half of each task's demonstrations (2 of 4, 4 of 8), each task's last quarter held out
    assert seeds(ds.train) == up[:1] + down[:3] and seeds(ds.val) == up[1:2] + down[3:4]
    assert ds.describe()["tasks"] == {"up": dict(found=4, used=2, train=1, val=1),
                                      "down": dict(found=8, used=4, train=3, val=1)}
    for split, eps in (("train", ds.train), ("val", ds.val)):
        want = np.eye(2, dtype=np.float32)[[0 if e.info["task"] == "up" else 1 for e in eps]]
        rows = np.arange(ds.n_windows(split))
        b = ds.window_batch(rows, split)
        assert b["goal"].dtype == np.float32 and b["goal"].shape == (len(rows), 2)
        np.testing.assert_array_equal(b["goal"], want[ds.windows[split][rows, 0]])
        e = ds.episode_batch(np.arange(len(eps))[::-1], split)
        np.testing.assert_array_equal(e["goal"], want[::-1])
    # without tasks: the pooled first half, the pooled last quarter held out, no goal
    single = DemoDataset(data_config([root], tmp_path / "cache", fraction=0.5, val_fraction=0.25), 1, 2)
    assert seeds(single.train) == list(range(4)) and seeds(single.val) == [4, 5]
    assert "goal" not in single.window_batch(np.arange(3)) and "tasks" not in single.describe()


def test_episodes_without_a_listed_task_are_refused_naming_the_bag(tmp_path):
    write_task_bag(tmp_path / "a" / "ep0", "up")
    write_task_bag(tmp_path / "a" / "ep1", "down")
    write_task_bag(tmp_path / "b" / "ep0", None)
    write_bag(tmp_path / "c" / "ep0", events=False)  # no episode events at all
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=r"a/ep1, episode 0: task 'down' is not in data.tasks \['up'\]"):
        DemoDataset(data_config([tmp_path / "a"], cache, tasks=["up"]), 1, 2)
    for folder in ("b", "c"):
        with pytest.raises(DatasetError, match=rf"{folder}/ep0, episode 0: its /mail/episode start event names no"):
            DemoDataset(data_config([tmp_path / folder], cache, tasks=["up"]), 1, 2)
    with pytest.raises(DatasetError, match=r"data.tasks \['sideways'\] have no episodes .*\['down', 'up'\]"):
        DemoDataset(data_config([tmp_path / "a"], cache, tasks=["up", "down", "sideways"]), 1, 2)


# ---- a policy trained on two tasks: checkpoint, evaluation, runtime ------------------------------------------
@pytest.fixture(scope="module")
def two_task_checkpoint(tmp_path_factory):
    """reach and push demos recorded by `mail-il demos`' own function, a tiny policy trained on both for two
    steps from the suite's config (a few overrides), its final checkpoint."""
    from mail_policy_node.commands.demos import record_demo
    from mail_policy_node.sim import make_task
    from mail_policy_node.training.trainer import Trainer

    tmp = tmp_path_factory.mktemp("two_tasks")
    for task in ("reach", "push"):
        env = make_task(task, render=True, image_size=(64, 64))
        for seed in (0, 1):
            record_demo(env, seed, tmp / "demos" / task / f"ep{seed}", episode=seed)
        env.close()
    cfg = load_config(SUITE, [f"data.bags={json.dumps([str(tmp / 'demos')])}", "data.tasks=[reach, push]",
                              f"data.cache_dir={tmp / 'cache'}", "data.image_size=[32, 32]",
                              "data.val_fraction=0.5", "policy.size=tiny", "train.steps=2", "train.batch_size=8",
                              "train.val_every=2", "train.ckpt_every=2", f"out={tmp / 'run'}"])
    summary = Trainer(cfg, progress=False).run()
    return Path(summary["final_checkpoint"]), summary


def test_the_checkpoint_names_its_tasks(two_task_checkpoint):
    from mail_policy_node.model.checkpoint import load_checkpoint

    folder, summary = two_task_checkpoint
    spec = load_checkpoint(folder).cfg.spec
    assert spec.task_names == ("reach", "push") and spec.goal_embedding_dim == 2
    assert json.loads((folder / "config.json").read_text())["policy"]["spec"]["task_names"] == ["reach", "push"]
    assert summary["dataset"]["tasks"] == {t: dict(found=2, used=2, train=1, val=1) for t in ("reach", "push")}


@pytest.mark.parametrize("names, why", [("reach", "task_names must be a list"), ([1, 2], "names of 1..64"),
                                        (["reach", "reach"], "duplicate task names"),
                                        (["reach", "push", "memory"], "3 task names need goal_embedding_dim 3"),
                                        (["x" * 65, "push"], "names of 1..64")])
def test_a_checkpoint_with_bad_task_names_is_refused(two_task_checkpoint, tmp_path, names, why):
    import shutil

    from mail_policy_node.checkpoint_limits import CheckpointError
    from mail_policy_node.model.checkpoint import load_checkpoint

    folder = tmp_path / "bad"
    shutil.copytree(two_task_checkpoint[0], folder)
    config = json.loads((folder / "config.json").read_text())
    config["policy"]["spec"]["task_names"] = names
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=why):
        load_checkpoint(folder)


def test_eval_gives_each_task_its_goal_and_refuses_an_unknown_task(two_task_checkpoint, tmp_path, monkeypatch,
                                                                   capsys):
    from mail_policy_node.commands import eval as eval_cmd
    from mail_policy_node.engine import InferenceEngine

    folder, _ = two_task_checkpoint
    goals = []
    observe = InferenceEngine.observe

    def spy(self, obs, rows=None):  # one goal per row observed
        goals.extend([None] if obs.goal is None else [tuple(g) for g in np.atleast_2d(obs.goal).tolist()])
        return observe(self, obs, rows)

    monkeypatch.setattr(InferenceEngine, "observe", spy)
    for task, goal in (("reach", (1.0, 0.0)), ("push", (0.0, 1.0))):
        goals.clear()
        out = tmp_path / task
        assert eval_cmd.main(["--checkpoint", str(folder), "--task", task, "--episodes", "1", "--max-steps", "3",
                              "--pictures", "0", "--out", str(out), "--no-progress"]) == 0
        assert set(goals) == {goal} and len(goals) == 3
        s = json.loads((out / "eval.json").read_text())["summary"]
        assert s["task"] == task and s["task_names"] == ["reach", "push"] and s["episodes"] == 1
    capsys.readouterr()
    assert eval_cmd.main(["--checkpoint", str(folder), "--task", "pick_place", "--episodes", "1",
                          "--out", str(tmp_path / "pp"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "task 'pick_place' is not one this policy was trained on: ['reach', 'push']" in err, err
    assert not (tmp_path / "pp").exists()


def test_runtime_refuses_a_multi_task_checkpoint_without_its_task_and_feeds_the_goal(two_task_checkpoint):
    from mail_policy_node.checkpoint_limits import CheckpointError
    from mail_policy_node.engine.engine import EngineConfig
    from mail_policy_node.runtime import POLICY_PARAMETERS, PolicyRuntime, RuntimeConfig, load_policy
    from tests.policy.test_runtime import Clock, feed

    folder, _ = two_task_checkpoint
    root, name = str(folder.parent), folder.name
    for task, why in (("", r"tasks \['reach', 'push'\]: name the one to do"),
                      ("pick_place", "'pick_place' is not one this policy was trained on")):
        with pytest.raises(CheckpointError, match=why):
            load_policy(root, name, EngineConfig(), task=task)
    assert {p.name: p.default for p in POLICY_PARAMETERS}["task"] == ""  # the node's parameter, none by default
    chunks = {}
    for task, goal in (("reach", [1, 0]), ("push", [0, 1])):
        loaded = load_policy(root, name, EngineConfig(), task=task)
        assert loaded.task == task and loaded.goal.tolist() == goal
        clock = Clock()
        rt = PolicyRuntime(loaded, RuntimeConfig(rate_hz=10), clock=clock)
        for step in range(2):  # the same inputs for both tasks
            clock.t += 0.1
            feed(rt, clock, step)
            clock.t += 0.01
            chunks[task] = rt.tick()
            assert chunks[task] is not None, rt.status()
            rt.reset_episode()  # a new episode opens with the same goal
        assert rt.status()["task"] == task and rt.chunks == 2 and not rt.drops, rt.status()
    # the goal reaches the output: the same observations, another task, another chunk
    assert not np.allclose(chunks["reach"].actions, chunks["push"].actions)
    # asked for another task between episodes (the replay's per-episode task): that task's goal from then on;
    # an unknown task is refused and changes nothing
    with pytest.raises(CheckpointError, match="'pick_place' is not one"):
        rt.set_task("pick_place")
    assert rt.status()["task"] == "push" and rt.policy.goal.tolist() == [0, 1]
    assert chunks["push"].task == "push"  # each chunk says its task: the controller's source (policy_id, task)
    # another task opens a new episode by itself (the policy node's task set at run time: no history built
    # under the old goal runs on): the first chunk is a fresh episode's, as that task's own runtime made it
    clock.t += 0.1
    feed(rt, clock, 0)
    clock.t += 0.01
    assert rt.tick() is not None and rt.episode_steps > 0
    rt.set_task("reach")
    assert rt.episode_steps == 0
    clock.t += 0.1
    feed(rt, clock, 1)
    clock.t += 0.01
    again = rt.tick()
    assert rt.status()["task"] == "reach" and rt.policy.goal.tolist() == [1, 0] and again.task == "reach"
    np.testing.assert_allclose(again.actions, chunks["reach"].actions, atol=1e-6)
    rt.set_task("reach")  # the running task again: the episode goes on
    assert rt.episode_steps > 0


# ---- the goal is used ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("history", ["window", "stream"])
def test_a_policy_trained_on_two_tasks_with_opposite_actions_follows_the_goal(tmp_path, history):
    """Two tasks with the same frames and joint states and opposite actions (+0.5 / -0.5 in every dimension):
    only the goal tells them apart. Without it the best a policy can do is their mean, 0. Window batches, or
    whole episodes (stream history, the goal token opening each episode's sequence)."""
    from mail_policy_node.training.trainer import Trainer

    root = tmp_path / "bags"
    for i in range(4):
        write_task_bag(root / f"up{i}", "up", n=6, value=0.5, seed=i)
        write_task_bag(root / f"down{i}", "down", n=6, value=-0.5, seed=i)
    cfg = tiny_config([root], tmp_path / "run", tmp_path / "cache", data__tasks=["up", "down"],
                      data__val_fraction=0.0, policy__obs_horizon=1, policy__action_horizon=2,
                      train__steps=60, train__batch_size=16, train__lr=3e-3, train__val_every=60,
                      train__ckpt_every=60, train__log_every=60)
    if history == "stream":  # the goal must be carried in the recurrent state: more steps (60: only step 0 knew it)
        cfg["policy"].update(layout="streaming", history="stream")
        cfg["train"].update(episodes_per_batch=4, steps=150, val_every=150, ckpt_every=150, log_every=150)
    t0 = time.perf_counter()
    trainer = Trainer(TrainConfig.from_dict(cfg), progress=False)
    trainer.run()
    policy = trainer.eval_model().eval()
    assert trainer.data.window_batch(np.arange(4))["goal"].shape == (4, 2)
    out = {}
    for task, goal in (("up", [1.0, 0.0]), ("down", [0.0, 1.0])):  # the same observations, either goal
        policy.reset()  # stream history: a new episode, opened by the goal
        chunks = []
        for t in range(4):  # the first steps of an episode, one at a time
            b = dict(trainer.data.window_batch(np.array([t])), goal=np.float32([goal]))
            with torch.no_grad():
                chunks.append(policy.predict_chunk(to_torch(b, "cpu", True)).numpy())  # (1, J, 8) robot units
        out[task] = np.concatenate(chunks)
    print(f"{history}: trained in {time.perf_counter() - t0:.1f} s; chunk up {out['up'].min():+.3f} .. "
          f"{out['up'].max():+.3f}, down {out['down'].min():+.3f} .. {out['down'].max():+.3f}")
    assert out["up"].min() > 0.3 and out["down"].max() < -0.3, (out["up"].min(), out["down"].max())


@pytest.mark.parametrize("batch", [1, 4])
def test_replay_asks_a_multi_task_checkpoint_for_each_episodes_task_or_the_one_given(two_task_checkpoint, tmp_path,
                                                                                     capsys, batch):
    """Offline evaluation of a multi-task checkpoint on recorded bags, one bag at a time and in lockstep batches
    alike: without --task each episode is asked for its own task, its /mail/episode start event's (as training
    read it), so a folder of several tasks' demos replays in one go; with --task every episode is asked for that
    one. A bag whose episodes name no task, or one the checkpoint was not trained on, is refused before anything
    is replayed, naming the bag and the checkpoint's tasks: the policy never runs on a zero or a wrong goal."""
    from mail_policy_node.commands import replay as replay_cmd

    folder, _ = two_task_checkpoint
    demos = folder.parent.parent / "demos"
    args = [str(demos / "reach"), str(demos / "push"), "--checkpoint", str(folder), "--max-plots", "0",
            "--batch", str(batch)]

    def replayed(out: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
        data = np.load(next((out / "chunks").glob("*.npz")))
        report = json.loads((out / "replay.json").read_text())["checkpoints"][0]
        return data["actions"], data["episode"], [e["info"]["task"] for e in report["episodes"]]

    chunks = {}
    for task in ("reach", "push"):
        assert replay_cmd.main([*args, "--task", task, "--out", str(tmp_path / task)]) == 0
        chunks[task], episode, tasks = replayed(tmp_path / task)
        assert chunks[task].size and np.isfinite(chunks[task]).all()
    assert tasks == ["push", "push", "reach", "reach"]  # the bags in path order
    assert not np.allclose(chunks["reach"], chunks["push"])
    assert replay_cmd.main([*args, "--out", str(tmp_path / "own")]) == 0
    own, own_episode, own_tasks = replayed(tmp_path / "own")
    assert own_tasks == tasks and np.array_equal(own_episode, episode)
    for k, task in enumerate(tasks):  # each episode's chunks are those of its own task's goal
        np.testing.assert_allclose(own[episode == k], chunks[task][episode == k], atol=1e-6)
    capsys.readouterr()
    for name, task, why in (("untold", None, "names no task"), ("sideways", "sideways", "task 'sideways'")):
        bag = write_task_bag(tmp_path / "bags" / name, task)
        assert replay_cmd.main([str(bag), *args[2:], "--out", str(tmp_path / f"no_{name}")]) == 1
        err = capsys.readouterr().err
        assert why in err and name in err and "['reach', 'push']" in err and "--task" in err, err
        assert not (tmp_path / f"no_{name}").exists()
        assert replay_cmd.main([str(bag), *args[2:], "--task", "push", "--out", str(tmp_path / name)]) == 0
    bag = write_bag(tmp_path / "bags" / "no_events", events=False)  # a bag without /mail/episode events at all
    assert replay_cmd.main([str(bag), *args[2:], "--out", str(tmp_path / "no_events")]) == 1
    err = capsys.readouterr().err
    assert "no_events has no /mail/episode start event" in err and "--task" in err, err
