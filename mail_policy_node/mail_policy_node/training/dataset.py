"""Training data: episodes from bags -> split, normalisation statistics, window and episode batches.

- Bags are found under ``data.bags`` (through symbolic links) and read through the config's topic map
  (``data.topics_map`` / ``data.topics``: `data.topics`, the map replay takes), so bags recorded under other
  names, with compressed or bgr8 images, train as they replay.
- Demonstrations (episodes) are ordered by bag path, then by time inside a bag; ``fraction`` keeps the
  first ones (the paper's "20 %" = the first 10 of 50), then the last ``val_fraction`` of those (at least
  one when > 0) are the validation split. The split is by episode, never by window.
- Multi-task (``data.tasks``): each episode's task is its /mail/episode start event's "task", and its goal
  the one-hot of that task's index in ``data.tasks``; every batch carries it as "goal" (B, G) float32.
  ``fraction`` and ``val_fraction`` apply to each task's episodes on their own (the first 20 % of every
  task; the last of every task's used ones held out), and the splits list the tasks in ``data.tasks`` order. An
  episode without a task or with an unlisted one, and a listed task without episodes, are DatasetErrors:
  the list says what the goal's entries mean, so data that does not fit it is refused, not dropped.
- Windows (history "window", paper layouts): for current step t, observations t-K+1 .. t and the J
  target actions t .. t+J-1 (the targets start at the current step). With padding, steps before the
  episode repeat its first observation and steps after it repeat its last action; without, only full
  windows are used.
- Episodes (history "stream"): whole sequences; the chunk at step t is actions t .. t+J-1, and a mask
  marks real steps (episodes of a batch are padded to the longest).
Batches are numpy dicts; `to_torch` turns them into the model's batch format (images uint8 (B, T, 3, H, W)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..spec import FeatureSpec, relative_action_index
from .config import DataConfig
from .episodes import DatasetError, Episode, EpisodeSettings, find_bags, load_bag_episodes


# what the episodes' joint state holds by default: 7 joints + gripper width (data.state_names: other entries)
STATE_NAMES = FeatureSpec().state_names


@dataclass
class Stats:
    action_mean: np.ndarray
    action_std: np.ndarray
    action_min: np.ndarray
    action_max: np.ndarray
    state_mean: np.ndarray
    state_std: np.ndarray

    @classmethod
    def of(cls, episodes: list[Episode], relative: Relative | None = None) -> Stats:
        """Over every step's action, or with ``relative`` over every chunk's offsets from its state."""
        if relative is None:
            a = np.concatenate([np.asarray(e.actions, np.float64) for e in episodes])
        else:
            a = np.concatenate([relative.chunks(e, np.float64).reshape(-1, len(e.action_names)) for e in episodes])
        s = np.concatenate([np.asarray(e.state, np.float64) for e in episodes])
        return cls(a.mean(0), a.std(0), a.min(0), a.max(0), s.mean(0), s.std(0))

    def to_dict(self) -> dict:
        return {k: np.asarray(v).tolist() for k, v in self.__dict__.items()}


@dataclass
class Relative:
    """Actions as offsets from the state of the step they are predicted at (FeatureSpec.relative_actions):
    the action dimensions ``actions`` minus the state dimensions ``states``."""

    actions: tuple[int, ...]
    states: tuple[int, ...]
    J: int

    def offsets(self, chunks: np.ndarray, state: np.ndarray) -> np.ndarray:
        """chunks (..., J, A) minus the state (..., S) they were predicted at, as a new array."""
        out = np.array(chunks)
        out[..., self.actions] -= state[..., None, self.states]
        return out

    def chunks(self, e: Episode, dtype=None) -> np.ndarray:
        """(n, J, A): every step's chunk (as ``dtype``, default the actions') as offsets from that step's state."""
        return self.offsets(episode_chunks(e, self.J).astype(dtype or np.asarray(e.actions).dtype, copy=False),
                            e.state)


def episode_chunks(e: Episode, J: int) -> np.ndarray:
    """(n, J, A): step t's targets, actions t .. t+J-1 (the last one repeated past the end)."""
    n = len(e)
    return np.asarray(e.actions)[np.clip(np.arange(n)[:, None] + np.arange(J)[None], 0, n - 1)]


class DemoDataset:
    def __init__(self, cfg: DataConfig, obs_horizon: int, action_horizon: int, progress: bool = False,
                 relative_actions: bool = False):
        self.cfg = cfg
        self.K, self.J = int(obs_horizon), int(action_horizon)
        self.state_names = tuple(cfg.state_names) or STATE_NAMES  # the joint state's entries, in order
        self.settings = EpisodeSettings(tuple(cfg.cameras), tuple(cfg.image_size), float(cfg.dt),
                                        skip_still_start=cfg.skip_still_start, topics=cfg.topic_map(),
                                        state_names=tuple(cfg.state_names))
        self.bags = find_bags(cfg.bags)
        self.cache_hits = 0
        episodes: list[Episode] = []
        it = self.bags
        if progress:
            from tqdm import tqdm
            it = tqdm(self.bags, desc="bags", unit="bag", leave=False)
        for bag in it:
            eps, hit = load_bag_episodes(bag, self.settings, cfg.cache_dir)
            self.cache_hits += int(hit)
            episodes.extend(eps)
        self.episodes_found = len(episodes)
        self.tasks = tuple(cfg.tasks)
        groups = self._by_task(episodes) if self.tasks else {"": episodes}
        self.train, self.val, episodes = [], [], []
        self.task_counts: dict[str, dict] = {}  # task -> episodes found, used, train, val
        for task, group in groups.items():  # fraction and split per task (or over all of them without tasks)
            used = group[: max(1, math.ceil(len(group) * cfg.fraction - 1e-9))]  # the first demonstrations
            n_val = 0 if cfg.val_fraction == 0 else max(1, round(len(used) * cfg.val_fraction))
            n_val = min(n_val, len(used) - 1)  # keep at least one training episode
            episodes += used
            self.train += used[: len(used) - n_val]
            self.val += used[len(used) - n_val:]
            if self.tasks:
                self.task_counts[task] = dict(found=len(group), used=len(used), train=len(used) - n_val, val=n_val)
        names = {e.action_names for e in episodes}
        if len(names) > 1:
            detail = "; ".join(f"{len(n)} values {list(n)}" for n in sorted(names, key=len))
            raise DatasetError(f"demonstrations disagree on the action dimensions: {detail}")
        self.action_names = episodes[0].action_names
        self.native_image_size = episodes[0].info.get("native_image_size", {})  # camera -> recorded (H, W)
        self.episodes = episodes
        # each split's episodes' task indices, for their goals (the rows of an identity)
        self.task_ids = {split: np.asarray([self.tasks.index(e.info["task"]) for e in eps], np.int64)
                         for split, eps in (("train", self.train), ("val", self.val))} if self.tasks else {}
        self.relative = None
        if relative_actions:
            a_idx, s_idx = relative_action_index(self.action_names, self.state_names)
            if not a_idx:
                raise DatasetError(f"relative actions: no FR3 arm joint among both the actions "
                                   f"{list(self.action_names)} and the state {list(self.state_names)}")
            self.relative = Relative(a_idx, s_idx, self.J)
        self.stats = Stats.of(self.train, self.relative)
        self.windows = {"train": self._windows(self.train), "val": self._windows(self.val)}

    def _by_task(self, episodes: list[Episode]) -> dict[str, list[Episode]]:
        """data.tasks -> its episodes, in order; DatasetError naming the bag for an episode that has no listed
        task, or naming the listed tasks no episode has."""
        groups: dict[str, list[Episode]] = {t: [] for t in self.tasks}
        for e in episodes:
            task = e.info.get("task")
            where = f"bag {e.source}, episode {e.info.get('bag_episode', 0)}"
            if task is None:
                raise DatasetError(f"{where}: its /mail/episode start event names no task, and data.tasks "
                                   f"{list(self.tasks)} needs one per episode (`mail-il demos` records it)")
            if task not in groups:
                raise DatasetError(f"{where}: task {task!r} is not in data.tasks {list(self.tasks)}: list it, or "
                                   f"leave its bags out of data.bags")
            groups[task].append(e)
        empty = [t for t, g in groups.items() if not g]
        if empty:
            found = sorted({str(e.info.get("task")) for e in episodes})
            raise DatasetError(f"data.tasks {empty} have no episodes under data.bags {list(self.cfg.bags)} "
                               f"(their tasks: {found})")
        return groups

    def goals(self, episode_rows: np.ndarray, split: str) -> np.ndarray:
        """(B, G) float32: the one-hot goals of the split's episodes ``episode_rows`` (indices into it)."""
        return np.eye(len(self.tasks), dtype=np.float32)[self.task_ids[split][np.asarray(episode_rows, np.int64)]]

    # ---- windows ----
    def _windows(self, episodes: list[Episode]) -> np.ndarray:
        """(N, 2) int: (episode index in the split, current step t)."""
        rows = []
        for i, e in enumerate(episodes):
            n = len(e)
            ts = range(n) if self.cfg.window_padding else range(self.K - 1, n - self.J + 1)
            rows.extend((i, t) for t in ts)
        return np.asarray(rows, np.int64).reshape(-1, 2)

    def n_windows(self, split: str = "train") -> int:
        return len(self.windows[split])

    def window_indices(self, e: Episode, t: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(e)
        obs = np.clip(np.arange(t - self.K + 1, t + 1), 0, n - 1)
        act = np.clip(np.arange(t, t + self.J), 0, n - 1)
        return obs, act

    def window_batch(self, rows: np.ndarray, split: str = "train") -> dict:
        eps = self.train if split == "train" else self.val
        images = {c: [] for c in self.cfg.cameras}
        state, actions = [], []
        for i, t in self.windows[split][rows]:
            e = eps[i]
            obs, act = self.window_indices(e, int(t))
            for c in self.cfg.cameras:
                images[c].append(e.images[c][obs])
            state.append(e.state[obs])
            actions.append(e.actions[act])
        state, actions = np.stack(state), np.stack(actions)
        if self.relative is not None:  # offsets from the current step's state, the window's last
            actions = self.relative.offsets(actions, state[:, -1])
        batch = dict(images={c: np.stack(v) for c, v in images.items()}, state=state, actions=actions)
        if self.tasks:
            batch["goal"] = self.goals(self.windows[split][rows][:, 0], split)
        return batch

    # ---- whole episodes ----
    def episode_batch(self, ids: np.ndarray, split: str = "train") -> dict:
        eps = [(self.train if split == "train" else self.val)[int(i)] for i in ids]
        b, t_max, a_dim = len(eps), max(len(e) for e in eps), len(self.action_names)
        h, w = self.cfg.image_size
        images = {c: np.zeros((b, t_max, h, w, 3), np.uint8) for c in self.cfg.cameras}
        state = np.zeros((b, t_max, eps[0].state.shape[1]), np.float32)
        actions = np.zeros((b, t_max, self.J, a_dim), np.float32)
        mask = np.zeros((b, t_max, self.J), bool)
        for k, e in enumerate(eps):
            n = len(e)
            for c in self.cfg.cameras:
                images[c][k, :n] = e.images[c]
            state[k, :n] = e.state
            actions[k, :n] = episode_chunks(e, self.J) if self.relative is None else self.relative.chunks(e)
            mask[k, :n] = True if self.cfg.window_padding else (np.arange(n)[:, None] + np.arange(self.J)[None]) < n
        batch = dict(images=images, state=state, actions=actions, action_mask=mask)
        if self.tasks:
            batch["goal"] = self.goals(ids, split)
        return batch

    def describe(self) -> dict:
        return dict(bags=len(self.bags), episodes_found=self.episodes_found, episodes=len(self.episodes),
                    train_episodes=len(self.train), val_episodes=len(self.val),
                    train_windows=self.n_windows("train"), val_windows=self.n_windows("val"),
                    train_steps=int(sum(len(e) for e in self.train)), cache_hits=self.cache_hits,
                    action_names=list(self.action_names), fraction=self.cfg.fraction,
                    first_episode=self.episodes[0].source, last_episode=self.episodes[-1].source,
                    topics=self.settings.topics.resolved(self.cfg.cameras),
                    **({"tasks": self.task_counts} if self.tasks else {}),
                    **({"state_names": list(self.state_names)} if self.cfg.state_names else {}))


def to_torch(batch: dict, device: torch.device | str, use_state: bool) -> dict:
    """numpy batch -> the policy's batch: images (B, T, 3, H, W) uint8, state / actions / goal float32."""
    out = {"images": {c: torch.from_numpy(np.ascontiguousarray(v)).permute(0, 1, 4, 2, 3).to(device, non_blocking=True)
                      for c, v in batch["images"].items()},
           "actions": torch.from_numpy(batch["actions"]).float().to(device)}
    if use_state:
        out["state"] = torch.from_numpy(np.asarray(batch["state"], np.float32)).to(device)
    if "goal" in batch:
        out["goal"] = torch.from_numpy(np.asarray(batch["goal"], np.float32)).to(device)
    if "action_mask" in batch:
        out["action_mask"] = torch.from_numpy(batch["action_mask"]).to(device)
    return out
