"""The streaming inference engine: observations in, de-normalised, time-stamped action chunks out.

One object serves the ROS policy node, the simulated evaluation and the rosbag replay:

    engine = InferenceEngine(policy, EngineConfig(history="stream"))
    engine.reset(goal=None)                        # episode start (all rows, or some rows)
    engine.observe(Observation(stamp, images, state))  # every control step (every dt)
    chunk = engine.act()                           # whenever a chunk is wanted
    chunk = engine.step(observation)               # observe + act

It owns every cache, all in static tensors allocated once:
- one token per control step from its camera frames (each frame encoded once), in a ring of K steps
  (history "window"), or folded straight into the recurrent state (history "stream");
- the per-layer conv and SSM states of every Mamba stack (fp32, also with bf16 weights), or the per-layer
  keys and values of D-Tr's / ED-Tr's streaming layouts (KV caches, model/kv_cache.py; weights' dtype).

How each control step runs, by backbone path and history:
- cached (streaming layouts), window: observe() encodes the frames and pushes the step's tokens into the
  ring; act() computes the prefix state over [goal, ring] from a zero state once, then every denoising
  step runs only the action tokens from it.
- cached (streaming layouts), stream: observe() encodes the frames and advances the episode state by the
  step's tokens; every denoising step of act() runs only the action tokens from that state.
  The same two for D-Tr's / ED-Tr's streaming layouts through the same backbone calls (init_state /
  observe / act): the state is a KV cache, the prefix runs once and the action (and time) tokens attend to
  its keys and values. The stream history is preallocated, EngineConfig.max_stream_steps control steps
  per row; a row's observe() past that is refused (EngineError history_full) before anything changes (reset(rows)
  starts it again).
- recompute (paper layouts, Transformer baselines included, or forced), window: observe() as above; act()
  runs the full [time, goal, ring, actions] sequence once per denoising step.

A window with fewer than K observations since reset is filled by repeating the first one.
On CUDA the observe and act work (the whole denoising loop included) are captured as CUDA graphs with
no host synchronisation inside; the only sync is reading the finished chunk back.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..control.chunks import ActionChunk
from ..model.diffusion import CommittedActions
from ..model.mamba_backbones import StreamState
from ..model.policy import MailPolicy
from .errors import EngineError
from . import fused_encoder
from .fused_act import FusedDDPM, fused_ddpm_usable
from .graphs import StepGraph, copy_tree_, set_rows_, tree_leaves
from .prefix_act import PrefixSampler, prefix_sampler_usable
from .inputs import Observation, check_observation

HISTORIES = ("window", "stream")
PATHS = ("auto", "cached", "recompute")
WEIGHT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class EngineConfig:
    history: str | None = None  # "window" | "stream"; None = the policy's own (PolicyConfig.history)
    path: str = "auto"  # "auto": cached observe/act for streaming layouts (except BC in history window, which
    #                     evaluates the network once anyway), full recompute otherwise; or force one
    batch: int = 1  # rows stepped together (robots, evaluation episodes)
    device: str = "cpu"  # "cpu" or "cuda[:n]"
    weights: str = "float32"  # "float32" or "bfloat16" (recurrent states and the sampler stay fp32)
    cuda_graphs: bool = True  # capture observe and act as CUDA graphs (CUDA only)
    use_kernels: bool = True  # mamba-ssm / causal-conv1d kernels for CUDA tensors when importable
    scan: str = "auto"  # PyTorch selective scan (no kernels): "sequential" | "parallel" | "auto" (the model's
    #                     choice: sequential on CPU, which is faster for the engine's few-token calls)
    sampler: str | None = None  # DDPM head: "ddpm" (ancestral) or "ddim"; None = the policy's default
    start_offset_s: float | None = None  # action i is due at newest stamp + start_offset_s + i * dt; None: the
    #                                       recording convention, one dt (FeatureSpec.action_lead_s)
    seed: int = 0  # the engine's noise generator (DDPM)
    fused: bool = True  # CUDA + Triton: the cached path through one fused kernel per Mamba block, and the
    #                     DDPM loop with a precomputed time-embedding table and a one-launch head (fused_act.py)
    camera_streams: bool = True  # CUDA: encode the cameras' frames concurrently, one CUDA stream per camera
    fused_encoder: bool = True  # CUDA + Triton: each GroupNorm of the camera trunks and its ReLU / residual
    #                             add as one launch (fused_encoder.py); on the H200 observe 0.89 -> 0.54 ms,
    #                             same outputs as the modules within fp32 rounding (engine_parity.py)
    channels_last: bool = True  # camera trunks in channels-last memory, weights converted once (the frames
    #                             arrive as (B, H, W, 3) already). CPU: oneDNN convolutions throughout (1.6x faster
    #                             trunks measured here, same values); CUDA: no NCHW <-> NHWC conversions in cuDNN,
    #                             only with fused_encoder (PyTorch's CUDA GroupNorm would copy it back to NCHW)
    real_time_chunking: bool = False  # DDPM head: act(committed=...) pulls the sampled chunk to the actions of
    #                                   the running one it overlaps (model/diffusion.py CommittedActions); without
    #                                   the fused DDPM loop, whose one-launch head has no place for it. BC: no effect
    max_stream_steps: int = 1024  # history "stream" with a KV-cached backbone (D-Tr streaming): control steps a
    #                               row's preallocated cache holds (memory ~ steps; on CUDA each step also reads
    #                               all of it); the next observe() of a full row is refused (history_full). Mamba states
    #                               have a fixed size: ignored there

    def __post_init__(self):
        if self.history is not None and self.history not in HISTORIES:
            raise ValueError(f"EngineConfig.history must be one of {HISTORIES} or None, got {self.history!r}")
        if self.path not in PATHS:
            raise ValueError(f"EngineConfig.path must be one of {PATHS}, got {self.path!r}")
        if self.batch < 1:
            raise ValueError(f"EngineConfig.batch must be >= 1, got {self.batch}")
        if self.weights not in WEIGHT_DTYPES:
            raise ValueError(f"EngineConfig.weights must be one of {tuple(WEIGHT_DTYPES)}, got {self.weights!r}")
        if self.scan not in ("auto", "sequential", "parallel"):
            raise ValueError(f"EngineConfig.scan must be 'auto', 'sequential' or 'parallel', got {self.scan!r}")
        if self.sampler not in (None, "ddpm", "ddim"):
            raise ValueError(f"EngineConfig.sampler must be 'ddpm', 'ddim' or None, got {self.sampler!r}")
        if self.start_offset_s is not None and (not np.isfinite(self.start_offset_s)
                                                or abs(self.start_offset_s) > 10.0):
            raise ValueError(f"EngineConfig.start_offset_s must be finite and within 10 s, got {self.start_offset_s}")
        if self.max_stream_steps < 1:
            raise ValueError(f"EngineConfig.max_stream_steps must be >= 1, got {self.max_stream_steps}")


@dataclass
class EngineChunk:
    """One action chunk per batch row, in robot units, with the time each action is due."""

    actions: np.ndarray  # (B, J, A) float32, robot units
    due: np.ndarray  # (B, J) [s]: stamp + start_offset + i * dt
    stamp: np.ndarray  # (B,) [s] newest observation stamp the chunk was computed from
    start_offset: float  # [s]
    dt: float  # [s]
    names: tuple[str, ...]  # A action dimension names
    action_space: str
    latency_s: float  # compute time of the newest observe() plus act(): frames in to chunk out
    timing: dict = field(default_factory=dict)  # observe_s, act_s
    steps: int = 0  # observations since reset (smallest over rows)

    def to_action_chunk(self, row: int = 0, policy_id: str = "", sequence: int = 0, task: str = "") -> ActionChunk:
        """The controller's chunk (control.chunks.ActionChunk) for one row."""
        return ActionChunk(stamp=float(self.stamp[row]), start_offset=self.start_offset, dt=self.dt,
                           actions=self.actions[row].astype(np.float64), names=self.names,
                           action_space=self.action_space, policy_id=policy_id, sequence=sequence, task=task)


def _prepare_policy(policy: MailPolicy, cfg: EngineConfig) -> MailPolicy:
    """The engine's own copy on the device, eval mode, weights in the requested dtype. Mamba's A_log and
    D, the normalisation and the DDPM schedule stay fp32."""
    problems = policy.normalization_problems()
    if problems:
        raise ValueError("the policy has no usable normalisation: " + "; ".join(problems))
    dtype = WEIGHT_DTYPES[cfg.weights]
    policy = copy.deepcopy(policy).to(cfg.device).eval()
    if dtype != torch.float32:
        for name in ("encoder", "backbone", "action_out", "action_in", "time_emb"):
            module = getattr(policy, name, None)
            if module is not None:
                module.to(dtype)
        for name, p in policy.backbone.named_parameters():
            if name.endswith(("A_log", ".D")):
                p.data = p.data.float()
    if cfg.channels_last and (torch.device(cfg.device).type == "cpu" or _fused_encoder_usable(policy, cfg)):
        policy.encoder.to(memory_format=torch.channels_last)  # conv weights; the frames arrive as NHWC already
    if hasattr(policy.backbone, "set_runtime"):
        policy.backbone.set_runtime(scan_impl=cfg.scan, use_kernels=cfg.use_kernels,
                                    fused="auto" if cfg.fused else "off")
    for p in policy.parameters():
        p.requires_grad_(False)
    return policy


def _fused_encoder_usable(policy: MailPolicy, cfg: EngineConfig) -> bool:
    return (cfg.fused_encoder and torch.device(cfg.device).type == "cuda" and fused_encoder.available()
            and fused_encoder.supports(policy.encoder))


class InferenceEngine:
    def __init__(self, policy: MailPolicy, config: EngineConfig | None = None):
        cfg = config or EngineConfig()
        pc = policy.cfg
        history = cfg.history or pc.history
        streaming = pc.backbone.layout == "streaming"
        # "auto": the cached path where it saves work. A BC head in history window evaluates the network
        # once per step, so splitting it into prefix + actions only adds a pass: it runs by recompute.
        is_ddpm = pc.backbone.head == "ddpm"
        cached = streaming and (cfg.path == "cached" or (cfg.path == "auto" and (history == "stream" or is_ddpm)))
        if cfg.path == "cached" and not streaming:
            raise ValueError(f"path 'cached' needs a streaming layout; this policy has {pc.backbone.layout!r} "
                             f"({pc.backbone.variant}) and runs by full recompute")
        if history == "stream" and not cached:
            raise ValueError("history 'stream' needs a streaming layout on the cached path")
        device = torch.device(cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r} asked for, but CUDA is not available here")
        self.config, self.history, self.cached = cfg, history, cached
        self.policy = _prepare_policy(policy, cfg)
        self.spec = pc.spec
        # a KV-cached backbone's stream history is preallocated: the goal token and max_stream_steps steps
        self._max_steps = None
        if cached and history == "stream" and hasattr(self.policy.backbone, "cache_tokens"):
            self._max_steps = cfg.max_stream_steps
            self.policy.backbone.set_runtime(cache_tokens=int(self.spec.goal_embedding_dim > 0)
                                             + cfg.max_stream_steps * pc.encoder.tokens_per_step)
        self._relative = self.spec.relative_index  # (action, state) indices offset from the newest state
        self.start_offset_s = (self.spec.action_lead_s if cfg.start_offset_s is None
                               else float(cfg.start_offset_s))
        self.device = device
        self.is_ddpm = self.policy.is_ddpm
        self.sampler = cfg.sampler or pc.diffusion.sampler
        self.real_time_chunking = cfg.real_time_chunking and self.is_ddpm
        # the cached DDPM loop through the fused kernels (CUDA + Triton), else the policy's own sampler
        self._fused_ddpm = (FusedDDPM(self.policy, cfg.batch) if cached and cfg.fused and not self.real_time_chunking
                            and fused_ddpm_usable(self.policy, device, self.sampler) else None)
        self._zero_from_none = device.type == "cuda" and cfg.fused
        self._fused_enc = _fused_encoder_usable(self.policy, cfg)
        # otherwise the policy's sampler with the time embeddings tabled and ED-Ma's encoder out of the loop
        self._prefix = (PrefixSampler(self.policy, cfg.batch, self.sampler) if cached and self._fused_ddpm is None
                        and prefix_sampler_usable(self.policy) else None)
        n_cam = len(self.spec.cameras)
        self._cam_streams = ([torch.cuda.Stream(device) for _ in range(n_cam - 1)]
                             if device.type == "cuda" and cfg.camera_streams and n_cam > 1 else [])
        self._alloc()
        self.fused_error: str | None = None
        try:
            self._build_graphs()
        except Exception as e:  # a Triton build or launch failure of the fused path: run without it
            if not (device.type == "cuda" and cfg.fused):
                raise
            self.fused_error = f"{type(e).__name__}: {e}"
            warnings.warn(f"fused CUDA path unavailable, running the kernel path without it: {self.fused_error}",
                          stacklevel=2)
            if hasattr(self.policy.backbone, "set_runtime"):
                self.policy.backbone.set_runtime(fused="off")
            self._fused_ddpm, self._zero_from_none, self._fused_enc = None, False, False
            self.policy.encoder.to(memory_format=torch.contiguous_format)
            self._prefix = (PrefixSampler(self.policy, cfg.batch, self.sampler) if cached
                            and prefix_sampler_usable(self.policy) else None)
            self._alloc()
            self._build_graphs()
        self.reset()

    def _build_graphs(self) -> None:
        capture = self.device.type == "cuda" and self.config.cuda_graphs
        self._observe_graph = StepGraph(self._observe_step, capture)
        self._act_graph = StepGraph(self._act_step, capture, pool=self._observe_graph.pool())

    @classmethod
    def from_checkpoint(cls, folder, config: EngineConfig | None = None) -> InferenceEngine:
        """Load (every check of load_checkpoint: bounds and budget before anything is built) and prepare.
        Any refusal is a CheckpointError with a one-line reason, also when the checkpoint cannot run with
        this engine configuration (a history or path its layout lacks, no CUDA, out of memory)."""
        from ..model.checkpoint import CheckpointError, load_checkpoint

        policy = load_checkpoint(folder, "cpu")
        try:
            return cls(policy, config)
        except (ValueError, MemoryError, torch.cuda.OutOfMemoryError) as e:
            raise CheckpointError(f"the checkpoint cannot run with this engine configuration: {e}") from None

    # ---- static buffers ----
    def _alloc(self) -> None:
        spec, b, dev = self.spec, self.config.batch, self.device
        p = self.policy
        d = p.cfg.backbone.d_model
        wdtype = WEIGHT_DTYPES[self.config.weights]
        pin = dev.type == "cuda"
        self._img = {c.name: torch.zeros(b, c.height, c.width, 3, dtype=torch.uint8, device=dev) for c in spec.cameras}
        self._img_host = {c.name: torch.zeros(b, c.height, c.width, 3, dtype=torch.uint8, pin_memory=pin)
                          for c in spec.cameras}
        self._joint = torch.zeros(b, spec.state_dim, device=dev) if spec.use_joint_state else None
        self._last_state = np.zeros((b, spec.state_dim), np.float32)  # host copy, robot units
        self._fresh = torch.ones(b, dtype=torch.bool, device=dev)  # rows whose next observation is their first
        self._goal_tok = torch.zeros(b, 1, d, dtype=wdtype, device=dev) if spec.goal_embedding_dim else None
        tokens = p.cfg.encoder.tokens_per_step
        self._ring = (torch.zeros(b, spec.obs_horizon, tokens, d, dtype=wdtype, device=dev)
                      if self.history == "window" else None)
        self._state = p.init_state(b, dev) if self.history == "stream" else None
        shape = (b, spec.action_horizon, spec.action_dim)
        self._noise = torch.zeros(p.ddpm.noise_shape(shape, self.sampler), device=dev) if self.is_ddpm else None
        self._out = torch.zeros(shape, device=dev)
        self._committed = (CommittedActions(torch.zeros(shape, device=dev), torch.zeros(shape[:2] + (1,), device=dev))
                           if self.real_time_chunking else None)
        self._gen = torch.Generator(device=dev)
        self._gen.manual_seed(self.config.seed)
        self._h2d_done = torch.cuda.Event() if pin else None  # host staging buffers free again
        # host bookkeeping
        self._goal = np.full((b, spec.goal_embedding_dim), np.nan, dtype=np.float32)
        self._count = np.zeros(b, dtype=np.int64)
        self._last_stamp = np.full(b, -np.inf)
        self._observe_s = 0.0

    # ---- the per-step work (static tensors only; captured as CUDA graphs on CUDA) ----
    def _encode_cameras(self) -> Tensor:
        """(B, n_cameras, F); on CUDA with camera streams, each extra camera on its own stream (forked from
        and joined back into the current one: inside a graph capture these become parallel branches)."""
        p, names = self.policy, self.spec.camera_names
        encode = (lambda c, x: fused_encoder.encode_frame(p.encoder, c, x)) if self._fused_enc else p.encode_frame
        enc = lambda c: encode(c, self._img[c].permute(0, 3, 1, 2))  # noqa: E731
        if not self._cam_streams:
            return torch.stack([enc(c) for c in names], dim=1)
        cur = torch.cuda.current_stream(self.device)
        feats = [None] * len(names)
        for s, i in zip(self._cam_streams, range(1, len(names))):
            s.wait_stream(cur)
            with torch.cuda.stream(s):
                feats[i] = enc(names[i])
        feats[0] = enc(names[0])
        for s in self._cam_streams:
            cur.wait_stream(s)
        return torch.stack(feats, dim=1)

    def _observe_step(self) -> None:
        p = self.policy
        feats = self._encode_cameras()  # (B, n_cameras, F)
        tok = p.obs_tokens(feats[:, None], None if self._joint is None else self._joint[:, None])  # (B, P, D)
        if self.history == "window":
            new = tok[:, None].to(self._ring.dtype)  # (B, 1, P, D)
            rolled = torch.cat([self._ring[:, 1:], new], dim=1)
            self._ring.copy_(torch.where(self._fresh[:, None, None, None], new.expand_as(self._ring), rolled))
        else:
            copy_tree_(self._state, p.observe(tok, self._state))

    def _window_tokens(self) -> Tensor:
        tokens = self._ring.flatten(1, 2)  # (B, K * P, D)
        if self._goal_tok is not None:
            tokens = torch.cat([self._goal_tok, tokens], dim=1)
        return tokens

    def _act_step(self) -> None:
        p, b = self.policy, self.config.batch
        if self.history == "stream":
            state = self._state
        elif self.cached:  # the prefix from zeros (None: the fused kernels read no state on CUDA)
            state = p.observe(self._window_tokens(), None if self._zero_from_none else p.init_state(b, self.device))
        if self._fused_ddpm is not None:
            self._out.copy_(p.unnormalize_actions(self._fused_ddpm(state, self._noise)))
            return
        if self._prefix is not None:
            self._out.copy_(self._prefix(state, self._noise, self._committed))
            return
        if self.cached:
            def run(x, t):
                return p.backbone.act(state, x, t)
        else:
            tokens = self._window_tokens()

            def run(x, t):
                return p.backbone(tokens, x, t)
        self._out.copy_(p.sample_with(run, b, self._noise, None, self.sampler, self._committed))

    # ---- episode ----
    def reset(self, goal=None, rows=None, seed: int | None = None) -> None:
        """Start a new episode for all rows, or for ``rows`` (indices) only; the other rows go on.
        ``goal``: the episode's goal embedding, (G,) or (len(rows), G); else the first observation's.
        ``seed`` reseeds the engine's noise generator (seeded once from EngineConfig.seed at construction)."""
        b = self.config.batch
        idx = np.arange(b) if rows is None else np.unique(np.asarray(rows, dtype=np.int64).reshape(-1))
        if idx.size == 0 or idx.min() < 0 or idx.max() >= b:
            raise ValueError(f"reset rows must be indices in 0..{b - 1}, got {rows!r}")
        if seed is not None:
            self._gen.manual_seed(int(seed))
        self._count[idx] = 0
        self._last_stamp[idx] = -np.inf
        self._goal[idx] = np.nan
        self._observe_s = 0.0
        rows_t = torch.as_tensor(idx, device=self.device)
        self._fresh[rows_t] = True
        if self._ring is not None:
            self._ring[rows_t] = 0
        if self._state is not None:
            set_rows_(self._state, self.policy.init_state(b, self.device), rows_t)
        if goal is not None:
            g = np.asarray(goal, dtype=np.float64)
            g = np.broadcast_to(g, (idx.size, g.shape[-1])) if g.ndim == 1 else g
            self._set_goal(idx, g)

    def _set_goal(self, idx: np.ndarray, goal: np.ndarray) -> None:
        gdim = self.spec.goal_embedding_dim
        if not gdim:
            raise EngineError("bad_goal", "the policy takes no goal embedding")
        if goal.shape != (idx.size, gdim):
            raise EngineError("bad_goal", f"goal must have shape ({gdim},) or ({idx.size}, {gdim}), got {goal.shape}")
        if not np.isfinite(goal).all():
            raise EngineError("nan_input", "goal embedding holds NaN or inf")
        self._goal[idx] = goal
        rows_t = torch.as_tensor(idx, device=self.device)
        with torch.no_grad():
            tok = self.policy.goal_token(torch.as_tensor(self._goal, device=self.device))  # (B, 1, D)
            self._goal_tok[rows_t] = tok[rows_t].to(self._goal_tok.dtype)
            if self._state is not None:  # the goal token opens the episode's sequence
                b = self.config.batch
                start = self.policy.observe(self._goal_tok, self.policy.init_state(b, self.device))
                set_rows_(self._state, start, rows_t)

    # ---- control step ----
    def _row_indices(self, rows) -> np.ndarray:
        """``rows`` (None: every row) as sorted unique row indices, checked."""
        b = self.config.batch
        if rows is None:
            return np.arange(b)
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= b or np.unique(idx).size != idx.size:
            raise ValueError(f"rows must be distinct indices in 0..{b - 1}, got {rows!r}")
        return idx

    def _hold_rows(self, idx: np.ndarray):
        """A copy of the caches of every row not in ``idx`` (None when that is no row), for `_restore_rows`:
        the step graphs advance the whole batch, the rows left out must not move."""
        others = np.setdiff1d(np.arange(self.config.batch), idx)
        if others.size == 0:
            return None
        rows_t = torch.as_tensor(others, device=self.device)
        caches = [self._ring] if self._ring is not None else tree_leaves(self._state)
        return rows_t, [c[rows_t].clone() for c in caches]

    def _restore_rows(self, held) -> None:
        if held is None:
            return
        rows_t, saved = held
        caches = [self._ring] if self._ring is not None else tree_leaves(self._state)
        for c, v in zip(caches, saved):
            c[rows_t] = v

    def observe(self, obs: Observation, rows=None) -> None:
        """Take one control step's observation for every row, or for ``rows`` only (indices; ``obs`` then
        holds len(rows) rows in that order, and the other rows' caches do not move: episodes that advance
        at their own pace in one batch). Raises `EngineError` (nothing changed)."""
        t0 = time.perf_counter()
        idx = self._row_indices(rows)
        c = check_observation(obs, self.spec, idx.size)
        fresh = self._count[idx] == 0
        late = ~fresh & (c.stamps <= self._last_stamp[idx])
        if late.any():
            raise EngineError("bad_stamp", f"rows {idx[late].tolist()}: stamp {c.stamps[late].tolist()} not "
                                           f"newer than the previous {self._last_stamp[idx][late].tolist()}")
        set_goal = None
        if self.spec.goal_embedding_dim:
            unset = np.isnan(self._goal[idx]).any(axis=1)
            if c.goal is not None:
                changed = ~unset & (np.abs(c.goal - self._goal[idx]) > 1e-6).any(axis=1)
                if changed.any():
                    raise EngineError("goal_changed", f"rows {idx[changed].tolist()} got a different goal "
                                                      "mid-episode; reset() them with the new goal")
                if (unset & ~fresh).any():
                    raise EngineError("goal_changed", "a goal arrived after the episode started without one")
                set_goal = np.flatnonzero(unset)
            elif unset.any():
                raise EngineError("missing_goal", f"rows {idx[unset].tolist()} have no goal embedding "
                                                  "(pass it to reset() or with the first observation)")
        if self._max_steps is not None and (self._count[idx] >= self._max_steps).any():
            full = idx[self._count[idx] >= self._max_steps]
            raise EngineError("history_full", f"rows {full.tolist()} hold max_stream_steps={self._max_steps} "
                              "control steps, all their KV cache takes; reset() them to start a new episode")
        # validated: from here on the caches change
        if set_goal is not None and set_goal.size:
            self._set_goal(idx[set_goal], c.goal[set_goal].astype(np.float64))
        held = None if rows is None else self._hold_rows(idx)
        if self._h2d_done is not None:
            self._h2d_done.synchronize()  # the previous step's uploads have left the staging buffers
        for name, arr in c.images.items():
            if rows is None:
                self._img_host[name].numpy()[...] = arr
            else:
                self._img_host[name].numpy()[idx] = arr
            self._img[name].copy_(self._img_host[name], non_blocking=True)
        if self._h2d_done is not None:
            self._h2d_done.record()
        if self._joint is not None:
            self._last_state[idx] = c.state  # relative actions are offsets from it
            self._joint.copy_(torch.from_numpy(self._last_state), non_blocking=True)  # pageable: copied at once
        self._fresh.copy_(torch.from_numpy(self._count == 0), non_blocking=True)
        self._observe_graph()
        self._restore_rows(held)
        self._count[idx] += 1
        self._last_stamp[idx] = c.stamps
        self._observe_s = time.perf_counter() - t0

    def act(self, noise: Tensor | np.ndarray | None = None, rows=None, committed=None) -> EngineChunk:
        """An action chunk for every row from the observations so far, or for ``rows`` only (the chunk then
        holds len(rows) rows in that order; the whole batch is computed); the caches are not changed.
        ``noise`` (DDPM): explicit draws of shape `noise_shape` (every row's); default: the engine's
        generator. ``committed`` (real_time_chunking): ``(actions (R, J, A), weight (R, J))`` for the R rows
        acted on, in robot units at this chunk's due times, weights in [0, 1] (control.chunks.committed_actions):
        the chunk keeps what the running one has committed to; None: nothing committed."""
        t0 = time.perf_counter()
        idx = self._row_indices(rows)
        if (self._count[idx] == 0).any():
            raise EngineError("no_observation", f"rows {idx[self._count[idx] == 0].tolist()} have no "
                                                "observation since reset()")
        self._set_committed(idx, committed)
        if self._noise is not None:
            if noise is None:
                self._noise.normal_(generator=self._gen)
            else:
                noise = torch.as_tensor(noise, dtype=torch.float32)
                if tuple(noise.shape) != tuple(self._noise.shape):
                    raise EngineError("bad_noise", f"noise must have shape {tuple(self._noise.shape)}, "
                                                   f"got {tuple(noise.shape)}")
                self._noise.copy_(noise)
        self._act_graph()
        actions = self._out.to("cpu", copy=True).numpy()  # the one host synchronisation
        if rows is not None:
            actions = actions[idx]
        act_s = time.perf_counter() - t0
        if not np.isfinite(actions).all():
            raise EngineError("nan_output", f"the chunk holds NaN or inf in rows "
                                            f"{idx[~np.isfinite(actions).all(axis=(1, 2))].tolist()}")
        a_idx, s_idx = self._relative
        if a_idx:  # offsets from the newest joint state -> absolute targets
            actions[..., a_idx] += self._last_state[idx][:, None, s_idx]
        dt, off = self.spec.dt, self.start_offset_s
        chunk = EngineChunk(actions=actions, due=self.due_times(rows), stamp=self._last_stamp[idx].copy(),
                            start_offset=off, dt=dt,
                            names=self.spec.action_names, action_space=self.spec.action_space,
                            latency_s=self._observe_s + act_s, timing=dict(observe_s=self._observe_s, act_s=act_s),
                            steps=int(self._count[idx].min()))
        self._observe_s = 0.0
        return chunk

    def due_times(self, rows=None) -> np.ndarray:
        """(R, J) [s]: when the actions of a chunk acted now are due, for every row or ``rows`` (the newest
        observation's stamp + start_offset_s + i * dt)."""
        stamp = self._last_stamp[self._row_indices(rows)]
        return stamp[:, None] + self.start_offset_s + self.spec.dt * np.arange(self.spec.action_horizon)[None]

    def _set_committed(self, idx: np.ndarray, committed) -> None:
        """The static CommittedActions the sampler reads: ``committed`` for rows ``idx`` (robot units -> the
        policy's normalised ones, relative dimensions as offsets from the newest state), weight 0 elsewhere (the
        other rows' actions are left as they are: a zero weight ignores them)."""
        if committed is None:
            if self._committed is not None:
                self._committed.weight.zero_()
            return
        if self._committed is None:
            raise EngineError("bad_committed", "committed actions given, but this engine samples without them "
                                               "(EngineConfig.real_time_chunking, a DDPM head)")
        actions, weight = (np.array(x, dtype=np.float32) for x in committed)
        _, j, a = self._out.shape
        if actions.shape != (len(idx), j, a) or weight.shape != (len(idx), j):
            raise EngineError("bad_committed", f"committed actions must be ({len(idx)}, {j}, {a}) with weights "
                                               f"({len(idx)}, {j}), got {actions.shape} and {weight.shape}")
        if not (np.isfinite(actions).all() and np.isfinite(weight).all() and ((weight >= 0) & (weight <= 1)).all()):
            raise EngineError("bad_committed", "committed actions must be finite and their weights in [0, 1]")
        a_idx, s_idx = self._relative
        if a_idx:  # absolute targets -> offsets from the newest joint state, as the policy predicts them
            actions[..., a_idx] -= self._last_state[idx][:, None, s_idx]
        rows = torch.as_tensor(idx, device=self.device)
        self._committed.weight.zero_()
        with torch.no_grad():
            self._committed.actions[rows] = self.policy.normalize_actions(torch.from_numpy(actions).to(self.device))
        self._committed.weight[rows] = torch.from_numpy(weight)[..., None].to(self.device)

    def step(self, obs: Observation, noise: Tensor | np.ndarray | None = None) -> EngineChunk:
        """observe(obs) then act(): one control step, frames in, chunk out."""
        self.observe(obs)
        return self.act(noise)

    # ---- introspection ----
    @property
    def noise_shape(self) -> tuple[int, ...] | None:
        return None if self._noise is None else tuple(self._noise.shape)

    @property
    def stream_state(self) -> StreamState | None:
        """The episode state (history "stream"); a live view of the engine's buffers, do not modify."""
        return self._state

    def describe(self) -> dict:
        b = self.policy.cfg.backbone
        return dict(variant=b.variant, layout=b.layout, head=b.head, history=self.history,
                    path="cached" if self.cached else "recompute", sampler=self.sampler if self.is_ddpm else None,
                    batch=self.config.batch, device=str(self.device), weights=self.config.weights,
                    cuda_graphs=self._act_graph.captured, fused_ddpm=self._fused_ddpm is not None,
                    prefix_sampler=self._prefix is not None, real_time_chunking=self.real_time_chunking,
                    fused_encoder=self._fused_enc,
                    camera_streams=bool(self._cam_streams), fused_error=self.fused_error, K=self.spec.obs_horizon,
                    max_stream_steps=self._max_steps,
                    J=self.spec.action_horizon, dt=self.spec.dt, start_offset_s=self.start_offset_s,
                    policy_id=self.policy.metadata.get("policy_id", ""))
