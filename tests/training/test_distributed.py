"""Training under torchrun (PyTorch DDP): two CPU processes over gloo on loopback train the run one process
trains with the same global batch (the same loss curve, step by step), rank 0 alone writes the outputs, a
resumed launch continues from its checkpoint, a batch the ranks cannot share is refused; and without
torchrun's environment nothing changes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from mail_policy_node.commands import train as train_cmd
from mail_policy_node.training import distributed
from mail_policy_node.training.config import ConfigError, TrainConfig
from mail_policy_node.training.distributed import Distributed, launch_from_env
from mail_policy_node.training.trainer import Trainer

from .conftest import tiny_config

LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

# 3 training episodes (lengths 8, 9, 10: 27 windows) and 2 validation ones. A global batch of 6 makes
# epochs of 6, 6, 6, 6, 3 windows, so the last step of each epoch splits 2 / 1 over two ranks (the loss
# weighting by each rank's share is exercised, not only equal halves).
RUN = dict(data__val_fraction=0.4, train__batch_size=6, train__steps=20, train__val_every=1, train__ckpt_every=10)

# Measured on a 2-core x86 CPU (torch 2.13, float32): the two-process per-step training losses differ from
# one process's by at most 1.8e-7 relative (2.5e-8 in the smoothed log they are recovered from), the
# validation losses by 7.6e-8 and the final weights by 2.4e-7: the gradients' sums only add up in another
# order. Without the weighting of each rank's loss by its share of the samples the curve moved by 1.5e-2.
# The tolerances leave a wide margin for other CPUs and BLAS builds and still catch such a mistake.
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-5


@pytest.fixture
def no_launch_env(monkeypatch):
    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)


def _config(bag_dir, tmp_path, name, cache="cache", **over) -> TrainConfig:
    return TrainConfig.from_dict(tiny_config([bag_dir], tmp_path / name, tmp_path / cache, **{**RUN, **over}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(config_path, cwd, *args: str) -> subprocess.CompletedProcess:
    """`mail-il train` as two CPU processes, meeting on loopback only (gloo bound to lo)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env.update(GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "--module", "mail_policy_node.cli", "train", str(config_path), *args,
           "--no-progress"]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"torchrun failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def _log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _step_losses(records: list[dict], restarts=()) -> np.ndarray:
    """Each step's training loss from the logged smoothed one (0.9 * previous + 0.1 * this step's), which
    starts again at each resumed step in ``restarts``. Needs a record every step (train.val_every=1)."""
    smooth = np.array([r["loss"] for r in records])
    steps = [r["step"] for r in records]
    assert steps == list(range(1, len(records) + 1))
    raw = smooth.copy()
    for i in range(1, len(raw)):
        if steps[i] not in restarts:
            raw[i] = (smooth[i] - 0.9 * smooth[i - 1]) / 0.1
    return raw


@pytest.mark.slow
def test_two_processes_train_the_run_of_one_and_resume(bag_dir, tmp_path, no_launch_env):
    """The reference: 20 steps in this process. Then 10 steps under torchrun (2 ranks, a fresh frame cache
    that rank 0 builds) and a second launch resumed from its step-10 checkpoint to step 20."""
    Trainer(_config(bag_dir, tmp_path, "single"), progress=False).run()
    reference = _log(tmp_path / "single")

    cfg = tiny_config([bag_dir], tmp_path / "ddp", tmp_path / "ddp_cache", **{**RUN, "train__steps": 10})
    path = tmp_path / "ddp.yaml"
    path.write_text(json.dumps(cfg))
    first = _torchrun(path, tmp_path)
    second = _torchrun(path, tmp_path, "train.steps=20", "--resume")

    # the same loss curve (and the same weights: the validation loss, which rank 0 computes every step)
    ddp = _log(tmp_path / "ddp")  # rank 0's lines only: 10 per launch, no rank writes twice
    np.testing.assert_allclose(_step_losses(ddp, restarts=(11,)), _step_losses(reference), rtol=LOSS_RTOL)
    np.testing.assert_allclose([r["val_loss"] for r in ddp], [r["val_loss"] for r in reference], rtol=LOSS_RTOL)
    a, b = (load_file(str(tmp_path / name / "final" / "model.safetensors")) for name in ("single", "ddp"))
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) < WEIGHT_ATOL

    # rank 0 alone reports and writes; the resumed launch continued from step 10
    for launch in (first, second):
        assert launch.stdout.count("checkpoint:") == 1 and launch.stderr.count("data: ") == 1
    assert "cache hits 0/5, 2 processes" in first.stderr and "cache hits 5/5, 2 processes" in second.stderr
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert (summary["steps"], summary["steps_this_run"], summary["world_size"]) == (20, 10, 2)
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == ["step_0000010", "step_0000020"]
    state = json.loads((tmp_path / "ddp" / "final" / "train_state.json").read_text())
    assert state["step"] == 20 and state["world_size"] == 2
    assert not [p for p in (tmp_path / "ddp_cache").iterdir() if ".tmp-" in p.name]
    assert len(list((tmp_path / "ddp_cache").iterdir())) == 5  # one entry per bag, written once


def test_each_rank_takes_its_share_of_the_one_process_batch(bag_dir, tmp_path, no_launch_env):
    """No process group needed: the split itself. Over an epoch (the last step has 3 windows: 2 + 1), the
    ranks' shares put together are the single process's batch, and a rank left without a row (1 window
    over 2 ranks) gets a stand-in that counts 0 samples."""
    trainer = Trainer(_config(bag_dir, tmp_path, "run"), progress=False)
    assert trainer.steps_per_epoch == 5
    for step in range(5):
        whole, n = trainer._rank_batch(step)
        shares = []
        for r in range(2):
            trainer.dist = Distributed(rank=r, world_size=2, local_rank=r)
            shares.append(trainer._rank_batch(step))
        trainer.dist = Distributed()
        assert sum(s for _, s in shares) == n == (3 if step == 4 else 6)
        np.testing.assert_array_equal(np.concatenate([b["actions"] for b, _ in shares]), whole["actions"])
        assert all(len(b["actions"]) == s for b, s in shares)
    trainer.batch = 1  # one window a step: rank 1 has none
    trainer.dist = Distributed(rank=1, world_size=2, local_rank=1)
    batch, samples = trainer._rank_batch(0)
    assert samples == 0 and len(batch["actions"]) == 1


@pytest.mark.parametrize("over,setting", [({}, "train.batch_size=7"),
                                          (dict(policy__layout="streaming", policy__history="stream",
                                                train__episodes_per_batch=3), "train.episodes_per_batch=3")])
def test_a_batch_the_ranks_cannot_share_is_refused(bag_dir, tmp_path, monkeypatch, capsys, over, setting):
    """Refused before any connection is opened (so no torchrun is needed to see it), naming the setting;
    the command prints it with the rank and exits 2."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    cfg = tiny_config([bag_dir], tmp_path / "run", tmp_path / "cache", **{"train__batch_size": 7, **over})
    with pytest.raises(ConfigError, match=f"{setting} is one step's global batch.*2 processes.*multiple of 2"):
        Trainer(TrainConfig.from_dict(cfg), progress=False)
    assert not dist.is_initialized()
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps(cfg))
    assert train_cmd.main([str(path), "--no-progress"]) == 2
    assert f"mail-il train [rank 1/2]: {setting} is one step's global batch" in capsys.readouterr().err


def test_without_torchrun_nothing_changes(bag_dir, tmp_path, no_launch_env, monkeypatch):
    """No launch variables, or torchrun with one process (WORLD_SIZE=1): rank 0 of 1, no process group,
    the policy trained as it is (no DDP wrapper), the same numbers as before."""
    assert launch_from_env() == Distributed() and launch_from_env({"WORLD_SIZE": "1", "RANK": "0"}) == Distributed()
    trainer = Trainer(_config(bag_dir, tmp_path, "plain", train__steps=2), progress=False)
    assert (trainer.dist.world_size, trainer.dist.is_main, trainer.device) == (1, True, torch.device("cpu"))
    assert trainer.model is trainer.policy and not dist.is_initialized()
    losses = [trainer.train_step(trainer._rank_batch(step))[0] for step in range(2)]
    monkeypatch.setenv("WORLD_SIZE", "1")
    again = Trainer(_config(bag_dir, tmp_path, "one", train__steps=2), progress=False)
    assert again.model is again.policy and not dist.is_initialized()
    assert [again.train_step(again._numpy_batch(again._rows(step), "train"))[0] for step in range(2)] == losses
    assert again.run()["world_size"] == 1


def test_launch_environment_is_read_and_checked():
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}
    launch = launch_from_env(env)
    assert (launch.rank, launch.world_size, launch.local_rank, launch.enabled, launch.is_main) == (3, 4, 1, True, False)
    assert launch.describe() == "rank 3/4" and Distributed().describe() == ""
    assert distributed.device_for(launch, "cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="RANK is not"):
        launch_from_env({"WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="RANK=2 LOCAL_RANK=2 do not fit WORLD_SIZE=2"):
        launch_from_env({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(ConfigError, match="WORLD_SIZE must be an integer, got 'two'"):
        launch_from_env({"WORLD_SIZE": "two", "RANK": "0"})
    # each rank's random numbers per step: its own, and the same again (a resumed run draws them again)
    seeds = {distributed.rank_seed(0, step, rank, "torch") for step in range(3) for rank in range(2)}
    assert len(seeds) == 6 and distributed.rank_seed(0, 1, 1, "torch") == distributed.rank_seed(0, 1, 1, "torch")
    assert all(0 <= s < 2**63 for s in seeds)
