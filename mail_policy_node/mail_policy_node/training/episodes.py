"""rosbag2 demonstrations -> aligned episodes, with an on-disk cache of decoded, resized frames.

Alignment (per bag, any storage `data.bags.BagReader` opens):
1. Episodes are cut at the /mail/episode "start"/"end" events (a bag without events is one episode);
   inside an episode, a gap of more than ``max_gap`` seconds between actions starts a new one.
2. Actions are put on the control grid t0 + k * dt: step k takes the latest action stamped at or before
   its grid time (+ dt / 4 tolerance). A bag recorded at the control rate maps one action to one step.
3. Each step's observation is the latest frame of every camera and the latest joint state stamped at
   or before that step's action (header stamps). Leading actions without every stream are dropped.

Topics: which topic holds each camera, the joint state, the actions and the episode events is the
settings' topic map (`data.topics.TopicMap`, the one `mail-il replay --topics-map` takes; from the config's
``data.topics_map`` / ``data.topics``), by default the stack's names. Camera topics may carry raw images
(rgb8, bgr8, mono8, ...) or jpeg / png CompressedImage, decoded as replay decodes them; the joint state
may name its joints in any order and come at any rate (the latest at or before each step, as above), so
a bag recorded under other names gives the same episodes as the same recording under the stack's.

Joint state: by default the FR3's 7 joints and gripper width (the sum of its fingers). ``state_names`` (the
config's ``data.state_names``) takes the named /joint_states entries in that order instead, ``gripper`` again
the fingers' sum: another robot's joints, or Meta-World's hand position and gripper opening. A joint state
lacking one of them is a DatasetError naming the bag and the names it has.

Actions come from the map's ``action`` (default /mail/action_command; ``action_topic`` sets it). Set to
the joint-state topic, the arm's measured joints and gripper width dt later are the actions
(`data.bags.recorded_action`): hand-guided demonstrations, recorded without any command.

``skip_still_start``: an episode starts at its last step before the arm first moves (a joint by more
than ``STILL_JOINT`` or the gripper by more than ``STILL_GRIPPER`` between two steps). A hand-guided
demonstration begins with seconds of a still arm (hands on, recording started); trained on, they teach
a policy to stay where it starts.

Cache: one folder per (bag, settings) under the cache folder, named ``<path hash>-<key>``, where the
key hashes the bag's absolute path, every file's size and mtime, the settings (cameras, image size,
dt, the topic map, ...) and a format version. It holds ``<camera>.npy`` (N, H, W, 3) uint8, ``state.npy``,
``actions.npy`` (every episode of the bag concatenated) and ``meta.json`` (episode offsets). Entries
are written to a temporary folder and renamed, so concurrent runs never see half an entry; a new entry
for a bag removes that bag's stale ones. Arrays are memory-mapped on load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from ..data.bags import (
    COMPRESSED_IMAGE,
    IMAGE,
    JOINT_STATE,
    BagReader,
    EpisodeEventRecord,
    ImageRecord,
    JointStateRecord,
    joint_state_to_vector,
    recorded_action,
)
from ..data.images import ImageDecodeError, resize_to_model
from ..data.topics import TopicMap
from ..spec import named_state

CACHE_VERSION = 1
STILL_JOINT = 0.002  # [rad] per step: below this on every joint (and the gripper below STILL_GRIPPER) ...
STILL_GRIPPER = 0.001  # [m] ... the arm did not move between two steps


class DatasetError(ValueError):
    """Demonstrations that cannot be trained on (empty bag, wrong dimensions, ...), naming the bag."""


@dataclass
class Episode:
    """One demonstration, one row per control step: the observation and the action taken from it."""

    images: dict[str, np.ndarray]  # camera -> (T, H, W, 3) uint8 (often a read-only memmap)
    state: np.ndarray  # (T, S) float32: q1..q7, gripper width; or the settings' state_names
    actions: np.ndarray  # (T, A) float32
    action_names: tuple[str, ...]
    source: str  # bag folder
    info: dict = field(default_factory=dict)  # from the episode events: task, seed, success, index in bag

    def __len__(self) -> int:
        return len(self.actions)


@dataclass(frozen=True)
class EpisodeSettings:
    cameras: tuple[str, ...]
    image_size: tuple[int, int]  # (H, W)
    dt: float
    max_gap: float = 1.0  # [s] between actions: longer gaps start a new episode
    skip_failed: bool = True  # drop episodes whose "end" event says success false
    # commands, or a measured joint state (module docstring); None: the topic map's action. Given, it is
    # the map's action (``topics.action`` is then this topic)
    action_topic: str | None = None
    skip_still_start: bool = False  # drop the still steps an episode starts with (module docstring)
    topics: TopicMap = field(default_factory=TopicMap)  # which topic holds what (module docstring)
    state_names: tuple[str, ...] = ()  # the joint state's /joint_states names; () = the FR3's (module docstring)

    def __post_init__(self):
        object.__setattr__(self, "state_names", tuple(self.state_names))
        if self.state_names and self.skip_still_start:
            raise ValueError("skip_still_start reads the FR3's joints and gripper width: not with state_names")
        if self.action_topic is None:
            object.__setattr__(self, "action_topic", self.topics.action)
        elif self.action_topic != self.topics.action:
            object.__setattr__(self, "topics", dataclasses.replace(self.topics, action=self.action_topic))

    def key_dict(self) -> dict:
        d = dict(cameras=list(self.cameras), image_size=list(self.image_size), dt=self.dt,
                 max_gap=self.max_gap, skip_failed=self.skip_failed, action_topic=self.action_topic,
                 skip_still_start=self.skip_still_start, version=CACHE_VERSION)
        topics = self.topics.resolved(self.cameras)
        if topics != TopicMap(action=self.action_topic).resolved(self.cameras):
            d["topics"] = topics  # only when not the stack's: entries of stack-named bags stay valid
        if self.state_names:  # likewise: entries of the FR3 layout keep their keys
            d["state_names"] = list(self.state_names)
        return d


# ------------------------------------------------------------------------------------------------
def find_bags(paths: Sequence[str | Path]) -> list[Path]:
    """rosbag2 folders named by ``paths`` (bag folders, or folders searched recursively), sorted by path
    so that "the first N demonstrations" is well defined.

    Symbolic links are followed: a data folder may hold links to bags (or to folders of bags) kept
    elsewhere, and its bags are ordered by the links' names. A bag reached twice (two links, a link and
    its target) counts once; a folder reached again (a link cycle) is not searched again."""
    found: dict[str, Path] = {}  # real path -> path as found (absolute, links kept)
    for p in map(Path, paths):
        if (p / "metadata.yaml").is_file():
            bags = [p]
        elif p.is_dir():
            bags = _walk_bags(p)
        else:
            raise DatasetError(f"data path {p} does not exist")
        for bag in bags:
            bag = bag.absolute()
            real = os.path.realpath(bag)
            found[real] = min(found.get(real, bag), bag)
    if not found:
        raise DatasetError(f"no rosbag2 folders (with metadata.yaml) under {[str(p) for p in paths]}")
    return sorted(found.values())


def _walk_bags(root: Path) -> list[Path]:
    """Folders holding a metadata.yaml under ``root``, through symbolic links, each real folder once."""
    seen: set[str] = set()
    out = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link cycle, or a second link to a folder already searched
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders.sort()
        if "metadata.yaml" in files and os.path.isfile(os.path.join(folder, "metadata.yaml")):
            out.append(Path(folder))
    return out


def bag_fingerprint(bag: Path) -> list:
    return sorted([str(f.relative_to(bag)), f.stat().st_size, f.stat().st_mtime_ns]
                  for f in bag.rglob("*") if f.is_file())


def cache_name(bag: Path, settings: EpisodeSettings) -> str:
    path_hash = hashlib.sha256(str(bag.resolve()).encode()).hexdigest()[:10]
    blob = json.dumps(dict(path=str(bag.resolve()), files=bag_fingerprint(bag), settings=settings.key_dict()),
                      sort_keys=True)
    return f"{path_hash}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


# ------------------------------------------------------------------------------------------------
def _latest(stamps: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Index of the latest of sorted ``stamps`` at or before each of ``at`` (-1: none)."""
    return np.searchsorted(stamps, at, side="right") - 1


def _segments(action_ns: np.ndarray, events: list[tuple[int, dict]], max_gap_ns: int) -> list[tuple[np.ndarray, dict]]:
    """Split sorted action stamps into episodes: (indices into action_ns, info)."""
    starts = [(t, e) for t, e in events if e.get("event") == "start"]
    ends = [(t, e) for t, e in events if e.get("event") == "end"]
    if not starts:
        bounds = [(action_ns[0], action_ns[-1], {**(ends[-1][1] if ends else {})})]
    else:
        bounds = []
        for i, (t0, e0) in enumerate(starts):
            t_next = starts[i + 1][0] if i + 1 < len(starts) else None
            end = next(((t, e) for t, e in ends if t >= t0 and (t_next is None or t < t_next)), None)
            t1 = end[0] if end else (t_next - 1 if t_next is not None else action_ns[-1])
            task = {"task": e0["task"]} if "task" in e0 else {}  # an episode's task is its start event's
            bounds.append((t0, t1, {**e0, **(end[1] if end else {}), **task}))
    out = []
    for t0, t1, info in bounds:
        idx = np.nonzero((action_ns >= t0) & (action_ns <= t1))[0]
        if len(idx) == 0:
            continue
        cuts = np.nonzero(np.diff(action_ns[idx]) > max_gap_ns)[0] + 1
        for part in np.split(idx, cuts):
            out.append((part, {k: v for k, v in info.items() if k != "event"}))
    return out


def _still_steps(state: np.ndarray) -> int:
    """How many leading steps of ``state`` (T, 8: joints, gripper width) come before the last still one
    ahead of the first move (0 when it moves at once; all but the last when it never moves)."""
    step = np.abs(np.diff(state, axis=0))
    moved = np.any(step[:, :7] > STILL_JOINT, axis=1) | (step[:, 7] > STILL_GRIPPER)
    return int(np.argmax(moved)) if moved.any() else len(state) - 1


def check_topics(bag: Path, reader: BagReader, settings: EpisodeSettings) -> None:
    """DatasetError naming the bag, each topic of the settings' map it lacks or holds in another message
    type, and what the topic is for."""
    tm = settings.topics
    wanted = [(tm.camera_topic(c), f"camera {c!r}", (IMAGE, COMPRESSED_IMAGE)) for c in settings.cameras]
    wanted += [(tm.joint_states, "joint state", (JOINT_STATE,)), (tm.action, "actions", (JOINT_STATE,))]
    have = reader.topics
    missing = list(dict.fromkeys(t for t, _, _ in wanted if t not in have))
    if missing:
        what = ", ".join(f"{t} ({w})" for t, w, _ in wanted if t not in have)
        raise DatasetError(f"bag {bag} lacks topic(s) {missing}: {what}; it has {sorted(have)}. Map the bag's "
                           f"names with data.topics_map (a topic map file) or data.topics (training.config)")
    wrong = [f"{t} ({what}) carries {have[t]}, not {' or '.join(types)}"
             for t, what, types in wanted if have[t] not in types]
    if wrong:
        raise DatasetError(f"bag {bag}: {'; '.join(wrong)}")


def read_bag(bag: Path, settings: EpisodeSettings) -> tuple[list[dict], tuple[str, ...]]:
    """Decode one bag into aligned episodes: [{"images": {cam: (T,H,W,3)}, "state", "actions", "info"}]."""
    tm = settings.topics
    image_topics: dict[str, list[str]] = {}  # topic -> cameras (one each, unless a map names a topic twice)
    for c in settings.cameras:
        image_topics.setdefault(tm.camera_topic(c), []).append(c)
    joint_topic, action_topic, episode_topic = tm.joint_states, tm.action, tm.episode
    needed = list(dict.fromkeys([*image_topics, joint_topic, action_topic]))
    frames = {c: ([], []) for c in settings.cameras}
    states: tuple[list, list] = ([], [])
    actions: tuple[list, list] = ([], [])
    events: list[tuple[int, dict]] = []
    names: tuple[str, ...] | None = None
    native: dict[str, list[int]] = {}  # camera -> recorded (H, W)
    h, w = settings.image_size
    try:
        with BagReader(bag) as reader:
            check_topics(bag, reader, settings)
            if reader.message_count(action_topic) == 0:
                raise DatasetError(f"bag {bag} is empty: no messages on {action_topic} "
                                   f"(topics: {sorted(reader.topics)})")
            topics = needed + ([episode_topic] if episode_topic in reader.topics else [])
            for rec in reader.records(topics, episode_topic=episode_topic):
                if isinstance(rec, EpisodeEventRecord):
                    events.append((rec.log_time_ns, rec.event))
                elif isinstance(rec, ImageRecord):
                    small = resize_to_model(rec.image, h, w)
                    for cam in image_topics[rec.topic]:
                        native.setdefault(cam, list(rec.image.shape[:2]))
                        frames[cam][0].append(rec.stamp_ns)
                        frames[cam][1].append(small)
                elif isinstance(rec, JointStateRecord):
                    if rec.topic == joint_topic:
                        try:
                            vector = (np.array(named_state(rec.names, rec.position, settings.state_names,
                                                           "data.state_names"), float)
                                      if settings.state_names else joint_state_to_vector(rec.names, rec.position))
                        except ValueError as e:
                            hint = "" if settings.state_names else " (the FR3 layout; other names: data.state_names)"
                            raise DatasetError(f"bag {bag}: {joint_topic}: {e}{hint}") from None
                        states[0].append(rec.stamp_ns)
                        states[1].append(vector)
                    if rec.topic != action_topic:
                        continue
                    try:
                        stamp, rec_names, value = recorded_action(rec, settings.dt)
                    except ValueError as e:
                        raise DatasetError(f"bag {bag}: {action_topic}: {e}") from None
                    if names is None:
                        names = rec_names
                    elif rec_names != names or len(value) != len(names):
                        raise DatasetError(f"bag {bag}: action messages change dimensions: {list(names)} "
                                           f"then {list(rec_names)} with {len(value)} values")
                    if len(value) != len(names):
                        raise DatasetError(f"bag {bag}: action has {len(value)} values for names {list(names)}")
                    actions[0].append(stamp)
                    actions[1].append(value)
    except FileNotFoundError as e:
        raise DatasetError(str(e)) from None
    except ImageDecodeError as e:
        raise DatasetError(f"bag {bag}: a camera frame cannot be decoded: {e}") from None
    for cam, (stamps, _) in frames.items():
        if not stamps:
            raise DatasetError(f"bag {bag}: no frames on {tm.camera_topic(cam)} (camera {cam!r})")
    if not states[0]:
        raise DatasetError(f"bag {bag}: no messages on {joint_topic} (joint state)")

    def sort(stamps, values):
        order = np.argsort(np.asarray(stamps, np.int64), kind="stable")
        return np.asarray(stamps, np.int64)[order], [values[i] for i in order]

    a_ns, a_val = sort(*actions)
    a_val = np.asarray(a_val, np.float32)
    streams = {c: sort(*frames[c]) for c in settings.cameras}
    s_ns, s_val = sort(*states)
    dt_ns = int(round(settings.dt * 1e9))
    episodes = []
    for idx, info in _segments(a_ns, sorted(events, key=lambda x: x[0]), int(settings.max_gap * 1e9)):
        if settings.skip_failed and info.get("success") is False:
            continue
        seg = a_ns[idx]
        n_steps = int((seg[-1] - seg[0] + dt_ns // 4) // dt_ns) + 1
        grid = seg[0] + np.round(np.arange(n_steps) * dt_ns).astype(np.int64)
        pick = idx[np.clip(_latest(seg, grid + dt_ns // 4), 0, None)]
        step_ns = a_ns[pick]
        obs_idx = {c: _latest(streams[c][0], step_ns) for c in settings.cameras}
        st_idx = _latest(s_ns, step_ns)
        ok = (st_idx >= 0) & np.all([obs_idx[c] >= 0 for c in settings.cameras], axis=0)
        first = int(np.argmax(ok)) if ok.any() else len(ok)
        if first == len(ok):
            raise DatasetError(f"bag {bag}: no action of episode {info.get('episode', len(episodes))} comes after "
                               f"a frame of every camera and a joint state")
        if settings.skip_still_start:
            first += _still_steps(np.stack([s_val[i] for i in st_idx[first:]]))
        sl = slice(first, None)
        episodes.append(dict(
            images={c: np.stack([streams[c][1][i] for i in obs_idx[c][sl]]) for c in settings.cameras},
            state=np.stack([s_val[i] for i in st_idx[sl]]).astype(np.float32),
            actions=a_val[pick[sl]],
            info={**info, "bag_episode": len(episodes), "native_image_size": native},
        ))
    if not episodes:
        raise DatasetError(f"bag {bag}: no usable episode (all failed or empty)")
    return episodes, names


# ------------------------------------------------------------------------------------------------
def _write_cache(folder: Path, episodes: list[dict], names: tuple[str, ...], settings: EpisodeSettings,
                 bag: Path) -> None:
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for cam in settings.cameras:
        np.save(tmp / f"{cam}.npy", np.concatenate([e["images"][cam] for e in episodes]))
    np.save(tmp / "state.npy", np.concatenate([e["state"] for e in episodes]))
    np.save(tmp / "actions.npy", np.concatenate([e["actions"] for e in episodes]))
    lengths = [len(e["actions"]) for e in episodes]
    meta = dict(bag=str(bag), action_names=list(names), settings=settings.key_dict(),
                offsets=np.concatenate([[0], np.cumsum(lengths)]).tolist(), infos=[e["info"] for e in episodes])
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    try:
        os.rename(tmp, folder)
    except OSError:  # another process wrote the same entry first
        shutil.rmtree(tmp, ignore_errors=True)
    prefix = folder.name.split("-")[0] + "-"
    for stale in folder.parent.glob(prefix + "*"):
        if stale.name != folder.name and ".tmp-" not in stale.name:
            shutil.rmtree(stale, ignore_errors=True)


def _read_cache(folder: Path, settings: EpisodeSettings) -> list[Episode]:
    meta = json.loads((folder / "meta.json").read_text())
    imgs = {c: np.load(folder / f"{c}.npy", mmap_mode="r", allow_pickle=False) for c in settings.cameras}
    state = np.load(folder / "state.npy", mmap_mode="r", allow_pickle=False)
    actions = np.load(folder / "actions.npy", mmap_mode="r", allow_pickle=False)
    off = meta["offsets"]
    return [Episode({c: imgs[c][a:b] for c in settings.cameras}, state[a:b], actions[a:b],
                    tuple(meta["action_names"]), meta["bag"], info)
            for a, b, info in zip(off[:-1], off[1:], meta["infos"])]


def load_bag_episodes(bag: Path, settings: EpisodeSettings, cache_dir: str | Path | None) -> tuple[list[Episode], bool]:
    """Episodes of one bag, from the cache when it holds an entry for the bag's current files and these
    settings. Returns (episodes, cache_hit). ``cache_dir`` None: decode, cache nothing."""
    bag = Path(bag)
    if cache_dir is None:
        eps, names = read_bag(bag, settings)
        return [Episode(e["images"], e["state"], e["actions"], tuple(names), str(bag), e["info"]) for e in eps], False
    folder = Path(cache_dir) / cache_name(bag, settings)
    if (folder / "meta.json").is_file():
        return _read_cache(folder, settings), True
    eps, names = read_bag(bag, settings)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _write_cache(folder, eps, names, settings, bag)
    return _read_cache(folder, settings), False
