"""The training loop: dataset -> policy -> Adam (+ EMA) -> checkpoints that resume bit for bit.

    trainer = Trainer(load_config("mail_bringup/config/train/reach_dma_bc_cpu.yaml"))
    summary = trainer.run()          # writes OUT/checkpoints/step_*/, OUT/final/, OUT/best/, OUT/summary.json

OUT/final is the last step's policy; OUT/best the policy at the lowest validation loss (held-out demos, the
same DDPM noise at every validation), replaced whenever a validation beats it: with few demonstrations the
validation loss turns up long before the last step (issue 22: 10 demos per task, lowest at step 300 of 800,
0.19 there and 0.33 at the end), and a fixed step count would deploy the overfitted one.

Checkpoint folder = the model library's checkpoint (``config.json`` + ``model.safetensors``: the weights
to deploy, EMA weights when EMA is on) + ``train_state.safetensors`` (raw weights, EMA shadow, Adam
moments, RNG state) + ``train_state.json`` (step, optimiser hyper-parameters, training config). No
pickle anywhere. Batches are a pure function of (seed, step), and the RNG state is restored on resume,
so a run resumed from step n gives the same weights as one that never stopped (on the same machine).

Under torchrun (training/distributed.py) the model is wrapped in DistributedDataParallel and every rank
takes an equal share of each step's global batch (train.batch_size, or train.episodes_per_batch in stream
history): all ranks draw the same global rows from (seed, step) and each keeps its slice, so one step sees
exactly the windows a single process would, and with the loss weighted by each rank's share of the samples
the averaged gradient is the single process's. The logged loss is the mean over all ranks' samples. Rank 0
alone validates, writes checkpoints, logs, the loss plot and summary.json; every rank resumes from the same
checkpoint. Random numbers inside a step (DDPM noise, dropout, image shifts) are each rank's own, drawn from
(seed, step, rank): they match one process's in distribution, not number for number.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..checkpoint_limits import MAX_HEADER_BYTES, MAX_TENSORS, CheckpointError, check_path, parse_json
from ..model.checkpoint import read_config, read_safetensors_header, save_checkpoint
from ..model.diffusion import EMA, DiffusionConfig
from ..model.policy import MailPolicy, PolicyConfig
from ..spec import CameraSpec, FeatureSpec, action_space_of
from . import distributed
from .config import SIZE_PRESETS, ConfigError, TrainConfig
from .augment import shift_generator, shift_images
from .dataset import DemoDataset, to_torch

STATE_WEIGHTS = "train_state.safetensors"
STATE_JSON = "train_state.json"
BEST = "best"  # OUT/best: the checkpoint at the lowest validation loss (OUT/final: the last step's)


def make_spec(cfg: TrainConfig, action_names: tuple[str, ...]) -> FeatureSpec:
    """The checkpoint's feature spec: the action space from the action names (spec.action_space_of), the state's
    names data.state_names (empty: the FR3 layout)."""
    h, w = cfg.data.image_size
    state = {"state_names": tuple(cfg.data.state_names)} if cfg.data.state_names else {}
    return FeatureSpec(cameras=tuple(CameraSpec(c, h, w) for c in cfg.data.cameras),
                       use_joint_state=cfg.data.use_joint_state, action_space=action_space_of(action_names),
                       action_names=tuple(action_names), obs_horizon=cfg.policy.obs_horizon,
                       action_horizon=cfg.policy.action_horizon, dt=cfg.data.dt,
                       relative_actions=cfg.policy.relative_actions,
                       goal_embedding_dim=len(cfg.data.tasks), task_names=tuple(cfg.data.tasks), **state)


def make_policy_config(cfg: TrainConfig, spec: FeatureSpec) -> PolicyConfig:
    p = cfg.policy
    size = SIZE_PRESETS[p.size]
    preset = f"{p.variant}_{p.head_name}" + ("_stream" if p.layout == "streaming" else "")
    backbone = {**p.family.size_depths.get(p.size, {}), "init": p.init, **p.backbone_overrides}
    encoder = {**size["encoder"], **p.encoder_overrides}
    try:
        return PolicyConfig.make(spec, preset, p.history, DiffusionConfig(**p.diffusion), encoder=encoder, **backbone)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"policy config: {e}") from None


def latest_checkpoint(path: Path) -> Path:
    """A training output folder's newest resumable checkpoint (or ``path`` itself when it is one)."""
    path = Path(check_path(path, "resume path"))
    try:
        if (path / STATE_JSON).is_file():
            return path
        steps = sorted((path / "checkpoints").glob("step_*")) if (path / "checkpoints").is_dir() else []
        steps = [s for s in steps if (s / STATE_JSON).is_file()]
    except OSError as e:
        raise CheckpointError(f"cannot resume from {path}: {e.strerror or type(e).__name__}") from None
    if not steps:
        raise ConfigError(f"nothing to resume in {path}: no {STATE_JSON} there or under {path / 'checkpoints'}")
    return steps[-1]


_ADAM_STATE = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
_MAX_RNG_STATE = 1 << 16  # bytes of a generator's state (CPU: 5056)
MAX_STATE_JSON_BYTES = 16 << 20  # train_state.json grows ~100 bytes per validation: 160 k of them


def read_train_state(folder: Path) -> dict:
    """train_state.json of a resumable checkpoint, bounded and checked (CheckpointError otherwise)."""
    path = folder / STATE_JSON
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_STATE_JSON_BYTES + 1)
    except OSError as e:
        raise CheckpointError(f"cannot resume from {folder}: {STATE_JSON}: {e.strerror or type(e).__name__}") from None
    state = parse_json(raw, f"{STATE_JSON} of {folder}", max_bytes=MAX_STATE_JSON_BYTES)
    if not (isinstance(state, dict) and isinstance(state.get("config"), dict)
            and all(isinstance(state["config"].get(k), dict) for k in ("data", "policy"))
            and type(state.get("step")) is int and state["step"] >= 0 and isinstance(state.get("param_groups"), list)):
        raise CheckpointError(f"cannot resume from {folder}: {STATE_JSON} lacks config (data, policy), step or "
                              f"param_groups")
    return state


def check_train_tensors(path: Path, policy: MailPolicy, ema: EMA | None) -> None:
    """The header of train_state.safetensors against this run: model.* and ema.* tensors of the policy's
    shapes, optim.<i>.<Adam state> of parameter i's shape (step: one value), rng.* small byte tensors."""
    params = [tuple(p.shape) for p in policy.parameters()]
    expected = {f"model.{k}": tuple(v.shape) for k, v in policy.state_dict().items()}
    if ema is not None:
        expected.update({f"ema.{k}": tuple(v.shape) for k, v in ema.shadow.items()})
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            header = read_safetensors_header(f, size, name=STATE_WEIGHTS, max_tensors=4 * MAX_TENSORS,
                                             max_header=4 * MAX_HEADER_BYTES,
                                             dtypes=("F32", "F16", "BF16", "F64", "U8"))
    except OSError as e:
        raise CheckpointError(f"cannot resume: {STATE_WEIGHTS}: {e.strerror or type(e).__name__}") from None
    missing = sorted(k for k in expected if k.startswith("model.") and k not in header)
    if missing:
        raise CheckpointError(f"cannot resume: {STATE_WEIGHTS} lacks {missing[:4]}")
    for name, (_, shape) in header.items():
        if name in expected:
            ok = shape == expected[name]
        elif name.startswith("optim."):
            _, i, key = (name.split(".", 2) + ["", ""])[:3]
            ok = (i.isdigit() and int(i) < len(params) and key in _ADAM_STATE
                  and (math.prod(shape) <= 1 if key == "step" else shape == params[int(i)]))
        else:
            ok = name in ("rng.torch", "rng.cuda") and len(shape) == 1 and shape[0] <= _MAX_RNG_STATE
        if not ok:
            raise CheckpointError(f"cannot resume: {STATE_WEIGHTS} holds {name[:80]!r} of shape {shape}, which this "
                                  f"run's model and optimiser do not have")


def check_global_batch(cfg: TrainConfig, world_size: int) -> None:
    """train.batch_size (train.episodes_per_batch in stream history) is one step's global batch; under
    torchrun each rank takes an equal share of it. A batch the ranks cannot share evenly is refused, naming
    the setting, rather than silently training with another batch than the config says."""
    if world_size <= 1:
        return
    name = "episodes_per_batch" if cfg.policy.history == "stream" else "batch_size"
    per = getattr(cfg.train, name)
    if per % world_size:
        lower = per // world_size * world_size
        raise ConfigError(f"train.{name}={per} is one step's global batch, shared evenly by the {world_size} "
                          f"processes of this torchrun launch, and {world_size} does not divide it: use a "
                          f"multiple of {world_size} (e.g. {max(lower, world_size)} or {lower + world_size}) or "
                          f"another number of processes (--nproc_per_node)")


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: str | Path | None = None, progress: bool = True):
        t = cfg.train
        self.cfg, self.out = cfg, Path(cfg.out)
        if torch.device(t.device).type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"train.device is {t.device!r} but CUDA is not available here")
        launch = distributed.launch_from_env()
        check_global_batch(cfg, launch.world_size)  # before joining: a refused config opens no connection
        self.dist, self.device = distributed.setup(t.device, launch)
        self.progress = progress and self.dist.is_main
        if t.threads:
            torch.set_num_threads(t.threads)
        self.resume_from = None
        if resume is not None:
            self.resume_from = latest_checkpoint(Path(self.out if resume == "auto" else resume))
            saved = read_train_state(self.resume_from)["config"]
            defaults = TrainConfig().to_dict()  # keys added since the run was saved hold their defaults
            for section in ("data", "policy"):
                if {**defaults[section], **saved[section]} != cfg.to_dict()[section]:
                    raise ConfigError(f"cannot resume {self.resume_from}: its {section} config differs from this one "
                                      f"(saved {saved[section]}, now {cfg.to_dict()[section]})")
        self.data = self._load_data()
        self.stream = cfg.policy.history == "stream"
        torch.manual_seed(t.seed)
        if self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.spec = make_spec(cfg, self.data.action_names)
        pcfg = make_policy_config(cfg, self.spec)
        self.policy = MailPolicy(pcfg, metadata={"trained_by": "mail-il train"})
        s = self.data.stats
        self.policy.set_normalization(s.action_mean, s.action_std, s.action_min, s.action_max, s.state_mean,
                                      s.state_std)
        self.policy.to(self.device)
        if hasattr(self.policy.backbone, "set_runtime"):
            scan = t.scan if t.scan != "auto" else ("sequential" if self.device.type == "cpu" else "parallel")
            self.policy.backbone.set_runtime(scan_impl=scan, use_kernels=t.kernels == "auto")
        self.opt = torch.optim.Adam(self.policy.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.use_ema = t.ema == "on" or (t.ema == "auto" and self.policy.is_ddpm)
        self.ema = EMA(self.policy, t.ema_decay) if self.use_ema else None
        self.amp = self.device.type == "cuda" and t.amp in ("auto", "bf16")
        n = len(self.data.train) if self.stream else self.data.n_windows("train")
        per = t.episodes_per_batch if self.stream else t.batch_size
        if n == 0:
            raise ConfigError("no training windows: episodes are shorter than K + J - 1 steps and "
                              "data.window_padding is off")
        self.batch = min(per, n)
        self.steps_per_epoch = math.ceil(n / self.batch)
        self.total_steps = t.steps if t.steps > 0 else max(1, math.ceil(t.epochs * self.steps_per_epoch))
        self.step = 0
        self.history: list[dict] = []
        if self.resume_from is not None:
            self._load_state(self.resume_from)
        self.best_val_loss, self.best_step = self._best_so_far()
        self.model = self._wrap_model()

    def _best_so_far(self) -> tuple[float, int | None]:
        """(validation loss, step) of OUT/best, which a resumed run must beat to replace it: read from the
        checkpoint itself (a run stopped after saving it resumes from an earlier step's state, whose history
        does not have it); (inf, None) for a fresh run or an unreadable one."""
        if self.resume_from is None or not (self.out / BEST / "config.json").is_file():
            return math.inf, None
        try:
            training = read_config(self.out / BEST)[1].get("training", {})
            return float(training["val_loss"]), int(training["step"])
        except (CheckpointError, KeyError, TypeError, ValueError):
            return math.inf, None

    def _load_data(self) -> DemoDataset:
        """The dataset; under torchrun rank 0 first and the other ranks after it, so that rank 0 alone decodes
        the bags into the frame cache (data.cache_dir) and the others read its entries, instead of every rank
        decoding the same bags and writing the same cache folders at once. The barrier is in ``finally``:
        when rank 0 fails, the others go on to load the data themselves and meet the same error."""
        def load() -> DemoDataset:
            return DemoDataset(self.cfg.data, self.cfg.policy.obs_horizon, self.cfg.policy.action_horizon,
                               progress=self.progress, relative_actions=self.cfg.policy.relative_actions)

        if self.dist.is_main:
            try:
                return load()
            finally:
                self.dist.barrier()
        self.dist.barrier()
        return load()

    def _wrap_model(self) -> torch.nn.Module:
        """What a training step calls: the policy itself for one process; under torchrun the policy in
        DistributedDataParallel, which averages the gradients over the ranks in backward (and starts every
        rank from rank 0's weights, which a shared seed or resumed checkpoint already made equal). The
        graph is the same every step (static_graph): DDP then copes with parameters a config leaves unused
        without searching the graph for them each step. The gradients are views into DDP's all-reduce buckets
        (no second copy of them)."""
        if not self.dist.enabled:
            return self.policy
        from torch.nn.parallel import DistributedDataParallel

        # A 1x1 convolution's weight gradient can come with other strides on its two size-1 dimensions than
        # the bucket's view: the same memory layout, which DDP still warns about (once per rank, every run).
        warnings.filterwarnings("ignore", message=r"Grad strides do not match bucket view strides[\s\S]*"
                                r"grad\.sizes\(\) = \[\d+, \d+, 1, 1\]")
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.policy, device_ids=ids, static_graph=True, gradient_as_bucket_view=True)

    # ---- batches: a pure function of (seed, step) ----
    def _rows(self, step: int) -> np.ndarray:
        n = len(self.data.train) if self.stream else self.data.n_windows("train")
        epoch, pos = divmod(step, self.steps_per_epoch)
        g = torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g).numpy()
        return np.sort(perm[pos * self.batch:(pos + 1) * self.batch])

    def _rank_batch(self, step: int) -> tuple[dict, int]:
        """This rank's share of step ``step``'s global batch, as `_numpy_batch` gives it: every rank draws the
        same global rows and keeps its slice, so the ranks together train on exactly one process's batch.
        An epoch's short last batch can leave a rank no row: it then takes the first row as a stand-in with
        0 samples (its loss weighs nothing) so that it still joins the gradient all-reduce."""
        rows = self._rows(step)
        if not self.dist.enabled:
            return self._numpy_batch(rows, "train")
        mine = np.array_split(rows, self.dist.world_size)[self.dist.rank]
        if len(mine) == 0:
            return self._numpy_batch(rows[:1], "train")[0], 0
        return self._numpy_batch(mine, "train")

    def _numpy_batch(self, rows: np.ndarray, split: str) -> tuple[dict, int]:
        if self.stream:
            b = self.data.episode_batch(rows, split)
            return b, int(b["action_mask"][:, :, 0].sum())
        return self.data.window_batch(rows, split), len(rows)

    def _batch(self, rows: np.ndarray, split: str) -> tuple[dict, int]:
        b, samples = self._numpy_batch(rows, split)
        return to_torch(b, self.device, self.spec.use_joint_state), samples

    def _mamba_kernels(self) -> bool:
        """Whether this run's Mamba layers ran mamba-ssm's CUDA kernels (a training path of its own: kept in
        the summary so that figures say which path trained them)."""
        from ..model import kernels
        from ..model.mamba import Mamba

        blocks = [m for m in self.policy.modules() if isinstance(m, Mamba)]
        return (self.device.type == "cuda" and kernels.have_sequence_kernels()
                and any(m.use_kernels for m in blocks))

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()

    def train_step(self, prepared: tuple[dict, int]) -> tuple[float, int]:
        """One optimiser step on a numpy batch from `_numpy_batch` / `_rank_batch` (prepared ahead by a
        thread). Returns the step's loss and samples, both over all ranks under torchrun."""
        self.model.train()
        batch, samples = to_torch(prepared[0], self.device, self.spec.use_joint_state), prepared[1]
        shift = self.cfg.train.augment_shift
        if shift:
            batch["images"] = shift_images(batch["images"], shift, self._shift_generator())
        if self.dist.enabled:  # this rank's DDPM noise and dropout: a function of (seed, step, rank)
            torch.manual_seed(distributed.rank_seed(self.cfg.train.seed, self.step, self.dist.rank, "torch"))
        with self._autocast():
            loss = self.model(batch)
        self.opt.zero_grad(set_to_none=True)
        if self.dist.enabled:
            mean, total = self._over_ranks(loss, samples)
            # DDP averages the ranks' gradients; weighting each rank's mean loss by its share of the samples
            # makes that average the gradient of the mean over all samples (1.0 when the shares are equal)
            (loss * (samples * self.dist.world_size / max(total, 1))).backward()
        else:
            loss.backward()
        if self.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.train.grad_clip)
        self.opt.step()
        if self.ema is not None:
            self.ema.update(self.policy)
        if not self.dist.enabled:
            mean, total = float(loss.detach()), samples  # read after the step: the host waits once, at the end
        return mean, total

    def _shift_generator(self) -> torch.Generator:
        seed = self.cfg.train.seed
        if not self.dist.enabled:
            return shift_generator(seed, self.step)
        return torch.Generator().manual_seed(distributed.rank_seed(seed, self.step, self.dist.rank, "shift"))

    def _over_ranks(self, loss: torch.Tensor, samples: int) -> tuple[float, int]:
        """Under torchrun, in one all-reduce: the step's loss to log, the mean over every rank's samples (each
        rank's mean weighted by its samples, the same number on every rank), and the step's samples over all
        ranks (windows, or real episode steps in stream history)."""
        both = torch.stack([loss.detach().double() * samples,
                            torch.tensor(float(samples), dtype=torch.float64, device=loss.device)])
        loss_sum, total = self.dist.all_sum(both).tolist()
        return loss_sum / max(total, 1), int(total)

    def _all_cpu_seconds(self, seconds: float) -> float:
        """This run's CPU time over all ranks: the samples (all ranks') per CPU second stay what they say."""
        if not self.dist.enabled:
            return seconds
        return float(self.dist.all_sum(torch.tensor([seconds], dtype=torch.float64, device=self.device)).item())

    def eval_model(self) -> MailPolicy:
        """The weights to validate and deploy: the EMA shadow when EMA is on."""
        if self.ema is None:
            return self.policy
        model = copy.deepcopy(self.policy)
        self.ema.copy_to(model)
        return model

    @torch.no_grad()
    def validate(self) -> float | None:
        n = len(self.data.val) if self.stream else self.data.n_windows("val")
        if n == 0:
            return None
        model = self.eval_model().eval()
        per = self.cfg.train.episodes_per_batch if self.stream else self.cfg.train.batch_size
        rows = np.arange(n)
        if n > per * self.cfg.train.val_batches:  # evenly spread, fixed subset
            rows = np.linspace(0, n - 1, per * self.cfg.train.val_batches).round().astype(int)
        losses, weights = [], []
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.cfg.train.seed + 7919)  # the same DDPM noise at every validation
            for i in range(0, len(rows), per):
                batch, samples = self._batch(rows[i:i + per], "val")
                with self._autocast():
                    losses.append(float(model(batch)))
                weights.append(samples)
        return float(np.average(losses, weights=weights))

    # ---- checkpoints ----
    def save_best(self, val_loss: float) -> str:
        """OUT/best: the policy at the lowest validation loss so far (no training state: it is for
        evaluation and deployment, a run resumes from checkpoints/). Replaced whole, never half-written."""
        return self.save(self.out / BEST, extra=dict(val_loss=val_loss), training_state=False)

    def save(self, folder: Path, extra: dict | None = None, training_state: bool = True) -> str:
        """A checkpoint folder, written beside it and renamed into place: the deployable checkpoint (the
        weights evaluated now, EMA's) and, with ``training_state``, what a resumed run needs (module docstring)."""
        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        meta = dict(training=dict(step=self.step, total_steps=self.total_steps, config=self.cfg.to_dict(),
                                  dataset=self.data.describe(), normalisation=self.data.stats.to_dict(),
                                  native_image_size=self.data.native_image_size, **(extra or {})))
        pid = save_checkpoint(self.eval_model(), tmp, metadata=meta)
        if training_state:
            self._save_training_state(tmp, pid)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        return pid

    def _save_training_state(self, tmp: Path, pid: str) -> None:
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.policy.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in self.ema.shadow.items()})
        opt = self.opt.state_dict()
        for i, st in opt["state"].items():
            for k, v in st.items():
                tensors[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        save_file(tensors, str(tmp / STATE_WEIGHTS))
        state = dict(step=self.step, total_steps=self.total_steps, ema_updates=self.ema.updates if self.ema else None,
                     param_groups=opt["param_groups"], config=self.cfg.to_dict(), history=self.history,
                     policy_id=pid, world_size=self.dist.world_size)
        (tmp / STATE_JSON).write_text(json.dumps(state, indent=1))

    def _load_state(self, folder: Path) -> None:
        """Resume: train_state.json and train_state.safetensors checked (header against this run's model and
        optimiser before any tensor is read); anything unusable is a CheckpointError naming it."""
        state = read_train_state(folder)
        check_train_tensors(folder / STATE_WEIGHTS, self.policy, self.ema)
        try:
            self._restore(state, load_file(str(folder / STATE_WEIGHTS)))
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - a state that passed the checks and still does not fit: name it, no traceback
            raise CheckpointError(f"cannot resume from {folder}: {type(e).__name__}: {e}") from None

    def _restore(self, state: dict, tensors: dict) -> None:
        model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        self.policy.load_state_dict(model, strict=True)
        if self.ema is not None:
            for k in self.ema.shadow:
                self.ema.shadow[k].copy_(tensors[f"ema.{k}"])
            self.ema.updates = int(state["ema_updates"])
        opt_state: dict = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, i, name = k.split(".", 2)
                opt_state.setdefault(int(i), {})[name] = v.to(self.device) if name != "step" else v
        groups = state["param_groups"]
        for g in groups:
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
        self.opt.load_state_dict({"state": opt_state, "param_groups": groups})
        torch.set_rng_state(tensors["rng.torch"])
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.step = int(state["step"])
        self.history = list(state.get("history", []))

    def _prune(self) -> None:
        folders = sorted((self.out / "checkpoints").glob("step_*"))
        for old in folders[: -self.cfg.train.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def _write_config(self) -> None:
        """OUT/config.yaml: this run's whole configuration (the file's values with the overrides and defaults
        applied), as YAML that `mail-il train OUT/config.yaml` trains again."""
        import yaml

        plain = json.loads(json.dumps(self.cfg.to_dict()))  # tuples -> lists, paths -> strings
        header = "# the configuration this run trained with (defaults and command-line overrides applied)\n"
        (self.out / "config.yaml").write_text(header + yaml.safe_dump(plain, sort_keys=False))

    # ---- the loop ----
    def run(self) -> dict | None:
        """Train to the last step; the summary (also OUT/summary.json). Under torchrun only rank 0 writes
        anything (and returns the summary); the other ranks train alongside, wait for rank 0's final
        checkpoint and summary, and return None."""
        from tqdm import tqdm

        t = self.cfg.train
        main = self.dist.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._write_config()
        log = open(self.out / "log.jsonl", "a") if main else None
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", file=sys.stderr,
                   disable=not self.progress, dynamic_ncols=True)
        t0, cpu0, samples, smooth, val = time.perf_counter(), time.process_time(), 0, None, None
        start_step = self.step
        window_t, window_samples = time.perf_counter(), 0
        prefetch = ThreadPoolExecutor(1)  # gathers the next batch while this one trains
        upcoming = prefetch.submit(self._rank_batch, self.step)
        try:
            while self.step < self.total_steps:
                prepared = upcoming.result()
                if self.step + 1 < self.total_steps:
                    upcoming = prefetch.submit(self._rank_batch, self.step + 1)
                loss, n = self.train_step(prepared)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"training loss became {loss} at step {self.step}")
                self.step += 1
                samples += n
                window_samples += n
                smooth = loss if smooth is None else 0.9 * smooth + 0.1 * loss
                last = self.step == self.total_steps
                if main and (self.step % t.val_every == 0 or last):
                    val = self.validate()
                    rec = dict(step=self.step, loss=smooth, val_loss=val, elapsed_s=time.perf_counter() - t0)
                    self.history.append(rec)
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    if val is not None and val < self.best_val_loss:
                        self.save_best(val)
                        self.best_val_loss, self.best_step = val, self.step
                if self.step % t.log_every == 0 or last:
                    now = time.perf_counter()
                    rate = window_samples / max(now - window_t, 1e-9)
                    window_t, window_samples = now, 0
                    bar.set_postfix(loss=f"{smooth:.4f}", val=f"{val:.4f}" if val is not None else "-",
                                    samples_s=f"{rate:.0f}")
                    bar.update(self.step - bar.n)
                if main and (self.step % t.ckpt_every == 0 or last):
                    self.save(self.out / "checkpoints" / f"step_{self.step:07d}")
                    self._prune()
        finally:
            prefetch.shutdown(cancel_futures=True)
            bar.close()
            if log is not None:
                log.close()
        elapsed, cpu = time.perf_counter() - t0, self._all_cpu_seconds(time.process_time() - cpu0)
        if not main:
            self.dist.barrier()  # rank 0 writes the final checkpoint and the summary
            return None
        final = self.out / "final"
        shutil.rmtree(final, ignore_errors=True)
        last_ckpt = self.out / "checkpoints" / f"step_{self.step:07d}"
        if last_ckpt.is_dir():
            shutil.copytree(last_ckpt, final)
        else:
            self.save(final)
        from ..model.backbones import count_parameters
        from ..model.checkpoint import policy_id

        summary = dict(
            out=str(self.out), final_checkpoint=str(final), policy_id=policy_id(final),
            steps=self.step, steps_this_run=self.step - start_step, total_steps=self.total_steps,
            epochs=self.step / self.steps_per_epoch, batch=self.batch,
            sample_unit="episode steps" if self.stream else "windows",
            train_seconds=elapsed, samples_per_second=samples / max(elapsed, 1e-9), cpu_seconds=cpu,
            samples_per_cpu_second=samples / max(cpu, 1e-9),
            final_train_loss=smooth, final_val_loss=val, history=self.history,
            best=dict(step=self.best_step, val_loss=self.best_val_loss, checkpoint=str(self.out / BEST))
            if self.best_step is not None else None,
            parameters=dict(total=count_parameters(self.policy), encoder=count_parameters(self.policy.encoder),
                            backbone=count_parameters(self.policy.backbone)),
            ema=self.use_ema, device=str(self.device), amp_bf16=self.amp, threads=torch.get_num_threads(),
            world_size=self.dist.world_size, mamba_kernels=self._mamba_kernels(),
            describe=self.policy.describe(), dataset=self.data.describe(), config=self.cfg.to_dict(),
        )
        summary["loss_plot"] = write_loss_plot(self.out / "loss.png", self.history)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        self.dist.barrier()  # the other ranks return once the run's outputs are all there
        return summary


def write_loss_plot(path: Path, history: list[dict]) -> str | None:
    """Training (smoothed) and validation loss against the step, as a PNG; the path, or None where
    matplotlib is not installed (the GPU image) or there is nothing to plot."""
    try:
        import matplotlib
    except ImportError:
        return None
    rows = [h for h in history if h.get("loss") is not None]
    if not rows:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["step"] for h in rows], [h["loss"] for h in rows], label="training (smoothed)")
    val = [h for h in rows if h.get("val_loss") is not None]
    if val:
        ax.plot([h["step"] for h in val], [h["val_loss"] for h in val], label="validation")
    if all(h["loss"] > 0 for h in rows) and all(h["val_loss"] > 0 for h in val):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return str(path)
