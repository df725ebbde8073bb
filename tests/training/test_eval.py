"""Evaluation: Wilson interval, and a tiny end-to-end run: sim demos -> train -> checkpoint -> eval."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mail_policy_node.commands import eval as eval_cmd
from mail_policy_node.commands import train as train_cmd
from mail_policy_node.commands.demos import record_demo
from mail_policy_node.training.evaluate import markdown, wilson_interval

from .conftest import tiny_config


def test_wilson_interval():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_end_to_end_demos_train_checkpoint_eval(tmp_path):
    from mail_policy_node.sim import make_task

    env = make_task("reach", render=True, image_size=(64, 64))
    for seed in (0, 1):
        record_demo(env, seed, tmp_path / "demos" / f"ep{seed}", episode=seed)
    env.close()
    cfg = tiny_config([tmp_path / "demos"], tmp_path / "run", tmp_path / "cache", train__steps=2,
                      data__val_fraction=0.5)
    (tmp_path / "cfg.yaml").write_text(json.dumps(cfg))
    assert train_cmd.main([str(tmp_path / "cfg.yaml"), "--no-progress"]) == 0
    ckpt = tmp_path / "run" / "final"
    out = tmp_path / "eval"
    assert eval_cmd.main(["--checkpoint", str(ckpt), "--task", "reach", "--episodes", "2", "--seed", "100",
                          "--max-steps", "4", "--pictures", "1", "--out", str(out), "--no-progress",
                          "--batch", "2"]) == 0
    report = json.loads((out / "eval.json").read_text())
    s = report["summary"]
    assert s["episodes"] == 2 and s["render_size"] == [64, 64] and s["history"] == "window" and s["batch"] == 2
    assert [e["steps"] for e in report["episodes"]] == [4, 4] and s["seeds"] == [100, 101]
    assert 0 <= s["wilson95"][0] <= s["success_rate"] <= s["wilson95"][1] <= 1
    assert s["chunk_latency_ms"] > 0 and (out / "eval.md").read_text().startswith("| checkpoint")
    assert len(list(out.glob("rollout_seed100_*.png"))) == 1


# --- through the controller: what the deployed arm does with the chunks --------------------------------

SHIPPED = "mail_bringup/checkpoints/reach_dma_small"


def _episode(seed, controller, steps=30):
    from mail_policy_node.training.evaluate import EvalJob, run_episode

    return run_episode(EvalJob(SHIPPED, "reach", seed, None, 2, (128, 128), False, steps, "cpu", controller))


@pytest.mark.parametrize("through_controller", [False, True])
def test_episodes_in_lockstep_are_the_episodes_one_at_a_time(through_controller):
    """run_episodes steps several scenes through one engine batch: each row must do what its episode does
    alone, also when the rows end at different steps (the finished ones stop observing, the others go on)
    and when each row's chunks go through its own controller core."""
    from mail_policy_node.control.params import controller_setup
    from mail_policy_node.training.evaluate import EvalJob, run_episode, run_episodes

    ctrl = (controller_setup({"relative_dynamics_factor": 1.0, "dry_run": False, "robot_ip": "127.0.0.1"}).controller
            if through_controller else None)
    jobs = [EvalJob(SHIPPED, "reach", seed, None, 0, (128, 128), seed == 1001, steps, "cpu", ctrl)
            for seed, steps in ((1000, 12), (1001, 31), (1002, 20))]
    together = run_episodes(tuple(jobs))
    for job, row in zip(jobs, together):
        alone = run_episode(job)
        assert (row["seed"], row["steps"], row["success"]) == (alone["seed"], alone["steps"], alone["success"])
        # a batch of 3 and a batch of 1 differ by float32 rounding (2e-7 in the actions); through the
        # controller's filter that grows to ~1e-4 m in 31 steps. The scenes' distances differ by > 1 mm
        assert row["final_goal_distance"] == pytest.approx(alone["final_goal_distance"], abs=5e-4), job
        assert len(row["frames"]) == len(alone["frames"]) == (row["steps"] + 1 if job.keep_frames else 0)
        if through_controller:  # the filter's limit counts sit on thresholds the batch's rounding can tip by one
            a, b = row["controller"], alone["controller"]
            assert a["mode"] == b["mode"] == "ENABLED" and a["chunks_rejected"] == b["chunks_rejected"] == 0
            assert a["limits"].keys() == b["limits"].keys() and a["watchdog_trips"] == b["watchdog_trips"]
            assert all(abs(a["limits"][k] - b["limits"][k]) <= 2 for k in a["limits"]), (a, b)
    assert len({r["final_goal_distance"] for r in together}) == 3  # three different scenes, not one


@pytest.fixture(scope="module")
def ddpm_checkpoint(tmp_path_factory):
    """A tiny DDPM policy trained two steps on two reach demos: its chunks depend on the sampling noise."""
    from mail_policy_node.sim import make_task
    from mail_policy_node.training.config import TrainConfig
    from mail_policy_node.training.trainer import Trainer

    tmp = tmp_path_factory.mktemp("ddpm")
    env = make_task("reach", render=True, image_size=(64, 64))
    for seed in (0, 1):
        record_demo(env, seed, tmp / "demos" / f"ep{seed}", episode=seed)
    env.close()
    cfg = tiny_config([tmp / "demos"], tmp / "run", tmp / "cache", train__steps=2, data__val_fraction=0.5,
                      policy__head="DDPM")
    return Trainer(TrainConfig.from_dict(cfg), progress=False).run()["final_checkpoint"]


def test_a_ddpm_episode_draws_its_own_noise_in_any_batch(ddpm_checkpoint):
    """Each row's DDPM noise comes from its own episode seed, drawn as an engine of one row seeded with it
    draws it: an episode's numbers do not depend on --batch or on the other episodes of its group."""
    from mail_policy_node.engine import EngineConfig, InferenceEngine, Observation
    from mail_policy_node.model.checkpoint import load_checkpoint
    from mail_policy_node.sim import make_task
    from mail_policy_node.training.evaluate import EvalJob, run_episode, run_episodes

    jobs = [EvalJob(ddpm_checkpoint, "reach", seed, None, 0, (64, 64), False, steps, "cpu")
            for seed, steps in ((1000, 7), (1001, 12), (1002, 9))]
    alone = [run_episode(job) for job in jobs]
    for group in (jobs, jobs[::-1]):  # the same episodes in another order: other rows, other neighbours
        for row in run_episodes(tuple(group)):
            solo = next(a for a in alone if a["seed"] == row["seed"])
            assert row["steps"] == solo["steps"]
            assert row["final_goal_distance"] == pytest.approx(solo["final_goal_distance"], abs=1e-5), row["seed"]
    assert len({a["final_goal_distance"] for a in alone}) == 3
    # one episode alone is the engine's own loop: reset with the seed, then its generator's draws
    policy = load_checkpoint(ddpm_checkpoint)
    engine = InferenceEngine(policy, EngineConfig(batch=1))
    env = make_task("reach", render=True, image_size=(64, 64), cameras=policy.cfg.spec.camera_names)
    obs = env.reset(1001)
    engine.reset(seed=1001)
    queue, done = [], False
    while not done and env.steps < 12:
        engine.observe(Observation(stamp=obs["time"], images=obs["images"], state=obs["joint_state"]))
        if not queue:
            queue = list(engine.act().actions[0])
        obs, done, info = env.step(queue.pop(0))
    assert info["goal_distance"] == pytest.approx(alone[1]["final_goal_distance"], abs=1e-9)


def test_real_time_chunking_keeps_each_rows_overlap(ddpm_checkpoint):
    """Replanning every step (J = 3) with real-time chunking: each new chunk is pulled to the overlap of the
    row's own last one, so the jump at chunk boundaries (the new first action against the old plan's next)
    falls; an episode in a lockstep batch is still the episode alone (every row keeps its own last chunk);
    the summary says whether it ran and reports the jumps, none when whole chunks run."""
    from mail_policy_node.training.evaluate import EvalJob, evaluate, run_episode, run_episodes

    def jobs(rtc):
        return [EvalJob(ddpm_checkpoint, "reach", seed, None, 1, (64, 64), False, 10, "cpu", None, rtc)
                for seed in (1000, 1001, 1002)]

    off = [run_episode(job) for job in jobs(False)]
    on = [run_episode(job) for job in jobs(True)]
    for alone, row in zip(on, run_episodes(tuple(jobs(True)))):
        assert row["final_goal_distance"] == pytest.approx(alone["final_goal_distance"], abs=1e-5)
        assert row["boundary_jump_rad"] == pytest.approx(alone["boundary_jump_rad"], abs=1e-5)
    jump_off = np.median([r["boundary_jump_rad"] for r in off])
    jump_on = np.median([r["boundary_jump_rad"] for r in on])
    assert jump_on < 0.8 * jump_off, (jump_on, jump_off)
    summary, _ = evaluate(ddpm_checkpoint, "reach", 1, 1000, exec_horizon=1, pictures=0, progress=False, max_steps=6,
                          real_time_chunking=True)
    assert summary["real_time_chunking"] and summary["boundary_jump_rad"] > 0
    assert "real-time chunking on" in markdown(summary)
    whole, _ = evaluate(ddpm_checkpoint, "reach", 1, 1000, pictures=0, progress=False, max_steps=6)
    assert not whole["real_time_chunking"] and whole["boundary_jump_rad"] is None


def test_chunks_through_the_controller_are_slowed_by_its_filter():
    # the shipped checkpoint asks for more speed than the sim profile's filter gives (its demos were
    # faster): executed directly it gets there sooner; through the controller core at a tenth of the
    # dynamics every command stays within that filter's velocity limit and the arm is still far away
    from mail_policy_node.control.params import controller_setup

    direct = _episode(1003, None)
    full = controller_setup({"relative_dynamics_factor": 1.0, "dry_run": False, "robot_ip": "127.0.0.1"}).controller
    slow = controller_setup({"relative_dynamics_factor": 0.1, "dry_run": False, "robot_ip": "127.0.0.1"}).controller
    at_full, at_slow = _episode(1003, full), _episode(1003, slow)
    for r in (at_full, at_slow):
        c = r["controller"]
        assert c["max_velocity_ratio"] <= 1.0 + 1e-9 and c["mode"] == "ENABLED", c
    assert at_slow["controller"]["limits"].get("velocity", 0) > 0
    assert at_slow["min_goal_distance"] > direct["min_goal_distance"] + 0.05, (at_slow, direct)
    assert at_slow["min_goal_distance"] > at_full["min_goal_distance"] + 0.05, (at_slow, at_full)


def test_the_command_runs_the_sim_profiles_controller(tmp_path):
    out = tmp_path / "eval"
    assert eval_cmd.main(["--checkpoint", SHIPPED, "--task", "reach", "--episodes", "2", "--seed", "1000",
                          "--max-steps", "20", "--pictures", "0", "--out", str(out), "--no-progress",
                          "--through-controller"]) == 0
    s = json.loads((out / "eval.json").read_text())["summary"]
    assert s["through_controller"] and s["exec_horizon"] == 5  # the sim profile's horizon, as --through-stack
    assert s["controller"]["max_velocity_ratio"] <= 1.0 + 1e-9 and s["controller"]["chunks_rejected"] == 0
    assert "through the controller" in (out / "eval.md").read_text()


def test_profile_params_set_the_controller_the_evaluation_runs(tmp_path, capsys):
    """`--profile-param node.param:=value` runs the controller (and the stack) with that sim-profile value,
    typed like the profile's own; names the profile lacks, badly typed values, parameters other options set,
    and the option without a profile to set are refused before anything runs."""
    from mail_policy_node.commands import fidelity

    cfg = fidelity.sim_profile_controller(fidelity.profile_params(
        ["franka_controller.blend:=temporal_ensemble", "franka_controller.watchdog_timeout:=0.6"]))
    assert cfg.scheduler.blend == "temporal_ensemble" and cfg.watchdog.timeout == pytest.approx(0.6)
    assert fidelity.sim_profile_controller().scheduler.blend == "crossfade"  # the profile itself is unchanged
    out = tmp_path / "eval"
    assert eval_cmd.main(["--checkpoint", SHIPPED, "--task", "reach", "--episodes", "1", "--seed", "1000",
                          "--max-steps", "10", "--pictures", "0", "--out", str(out), "--no-progress",
                          "--through-controller", "--profile-param", "franka_controller.blend:=replace"]) == 0
    s = json.loads((out / "eval.json").read_text())["summary"]
    assert s["profile_params"] == {"franka_controller": {"blend": "replace"}}
    capsys.readouterr()
    for bad, says in ((["franka_controler.blend:=replace"], "no node 'franka_controler'"),
                      (["franka_controller.blnd:=replace"], "has no parameter 'blnd'"),
                      (["franka_controller.watchdog_timeout:=soon"], "watchdog_timeout must be a number"),
                      (["franka_controller.blend=replace"], "node.param:=value"),
                      (["policy_node.execution_horizon:=4"], "set by --exec-horizon"),
                      (["sim_world.task:=push"], "set by --task")):
        assert eval_cmd.main(["--checkpoint", SHIPPED, "--task", "reach", "--no-progress", "--through-controller",
                              *[a for p in bad for a in ("--profile-param", p)]]) == 2, bad
        assert says in capsys.readouterr().err, bad
    assert eval_cmd.main(["--checkpoint", SHIPPED, "--task", "reach", "--profile-param",
                          "franka_controller.blend:=replace"]) == 2
    assert "--through-controller or --through-stack" in capsys.readouterr().err


def test_a_step_follows_a_path_of_commands():
    from mail_policy_node.sim import make_task

    env = make_task("reach", render=False)
    env.reset(0)
    q0 = env.joint_state()
    still = np.tile(env.state()["command"], (10, 1))
    env.step(still[-1], path=still)
    np.testing.assert_allclose(env.joint_state()[:7], q0[:7], atol=2e-3)
    with pytest.raises(ValueError, match="divide"):
        env.step(still[-1], path=still[:7])
