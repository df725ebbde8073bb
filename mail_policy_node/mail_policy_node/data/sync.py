"""Approximate-time synchronisation of observation streams (cameras, joint state), without ROS.

The policy node feeds every accepted message in with its header stamp; at each control tick it asks
for the newest complete observation: one message per stream, all within `tolerance` of a pivot stamp
taken from the reference stream (the first one), and no older than `max_age` at the tick. Nothing is
returned until every stream has data. Sets are returned at most once (a tick without a newer set gets
None and is counted as `no_new`), and a tick whose newest set is too old is counted as `stale`.

Time base changes (a clock step, a device reset, a recording that starts again): a message stamped
more than `backward_threshold` (default: max_age) before its stream's newest cannot be an ordinary
out-of-order arrival. It is counted (`backward_stamp`) and kept out of the history. A lone one (a stray
late message) is forgotten when its stream goes on in the old time base. Once `restart_after` of them
have come in increasing order, and (when the caller passes its clock as `now`) fresh enough to be used
(not older than max_age), the stream has a new time base: every stream's history is dropped (so no
set can mix the old and the new base), the stream starts again from those messages, `time_base_restart`
is counted and `epoch` goes up. Sets carry the epoch they were built in, so a consumer with a history
of its own (the policy's observation window) knows to restart it too. Without this, a stream whose
stamps went back by more than the buffer was cut from its own history on every message, and one that
went back less produced `no_new` (not reported anywhere) until its stamps caught up: a stall as long
as the step. Old-stamped messages (a burst of stale ones, a recording replayed with its old stamps)
never restart anything: they could not be used in a set anyway. A step back too small to be told from
reordering (less than about `backward_threshold` plus `restart_after` - 1 message periods) still waits
for the stamps to pass the old ones: no set for at most that long, and never one that goes back in time.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Sequence


@dataclass(frozen=True)
class SyncedObservation:
    stamp: float  # pivot stamp [s]: the reference stream's acquisition time
    newest_stamp: float  # newest acquisition time in the set (ActionChunk.header.stamp uses it)
    items: dict[str, Any]  # stream name -> payload
    stamps: dict[str, float]  # stream name -> that payload's stamp [s]
    epoch: int = 0  # time base: goes up each time the history restarts on a backward stamp


@dataclass
class _Stream:
    stamps: list[float] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)
    # messages stamped backwards, in increasing order: a new time base once there are restart_after
    pending: list[tuple[float, Any]] = field(default_factory=list)

    def clear(self) -> None:
        self.stamps.clear()
        self.items.clear()
        self.pending.clear()


class ObservationSynchronizer:
    def __init__(self, streams: Sequence[str], tolerance: float = 0.05, max_age: float = 0.2,
                 buffer_seconds: float = 2.0, backward_threshold: float | None = None, restart_after: int = 3):
        if not streams or len(set(streams)) != len(streams):
            raise ValueError(f"streams must be unique and non-empty, got {list(streams)}")
        if tolerance <= 0 or max_age <= 0 or buffer_seconds <= max_age:
            raise ValueError(f"need tolerance > 0, max_age > 0, buffer_seconds > max_age; got "
                             f"{tolerance}, {max_age}, {buffer_seconds}")
        backward_threshold = max_age if backward_threshold is None else backward_threshold
        if backward_threshold <= 0 or restart_after < 1:
            raise ValueError(f"need backward_threshold > 0 and restart_after >= 1; got {backward_threshold}, "
                             f"{restart_after}")
        self.streams = tuple(streams)
        self.tolerance = tolerance
        self.max_age = max_age
        self.buffer_seconds = buffer_seconds
        self.backward_threshold = backward_threshold
        self.restart_after = restart_after
        # "duplicate", "backward_stamp": messages kept out of the history; "time_base_restart": history
        # restarts; "no_new", "stale", "no_match": outcomes of ticks without a set
        self.counts: Counter[str] = Counter()
        self.epoch = 0
        self.last_event = ""  # what the last backward stamp or restart was, for the log
        self._buf = {s: _Stream() for s in self.streams}
        self._last_pivot: float | None = None

    def reset(self) -> None:
        for s in self._buf.values():
            s.clear()
        self._last_pivot = None

    def add(self, stream: str, stamp: float, item: Any, now: float | None = None) -> None:
        """Buffer one message. Out-of-order arrivals are inserted in stamp order; a stamp that went
        back further than `backward_threshold` is held out (see the module's docstring). `now`: the
        caller's clock, in the time base the stamps should be in."""
        buf = self._buf[stream]
        if buf.stamps and stamp < buf.stamps[-1] - self.backward_threshold:
            self._backward(stream, buf, stamp, item, now)
            return
        buf.pending.clear()  # the stream goes on in its time base: what went back were stray messages
        i = bisect.bisect_right(buf.stamps, stamp)
        if i > 0 and buf.stamps[i - 1] == stamp:
            self.counts["duplicate"] += 1
            return
        buf.stamps.insert(i, stamp)
        buf.items.insert(i, item)
        # keep a bounded window behind the newest message of this stream
        horizon = buf.stamps[-1] - self.buffer_seconds
        cut = bisect.bisect_left(buf.stamps, horizon)
        if cut:
            del buf.stamps[:cut]
            del buf.items[:cut]

    def _backward(self, stream: str, buf: _Stream, stamp: float, item: Any, now: float | None) -> None:
        self.counts["backward_stamp"] += 1
        back = buf.stamps[-1] - stamp
        if now is not None and now - stamp > self.max_age:
            self.last_event = f"{stream}: stamp {back:.3f} s behind the stream's newest and {now - stamp:.3f} s old"
            return  # stale as well: no new time base a set could be built in
        if buf.pending and not (buf.pending[-1][0] < stamp <= buf.pending[-1][0] + self.buffer_seconds):
            buf.pending.clear()  # not a continuation of the others: start collecting again from this one
        buf.pending.append((stamp, item))
        if len(buf.pending) < self.restart_after:
            self.last_event = f"{stream}: stamp {back:.3f} s behind the stream's newest"
            return
        pending = list(buf.pending)
        for b in self._buf.values():
            b.clear()  # every stream: a set must not mix the old time base with the new one
        buf.stamps[:] = [t for t, _ in pending]
        buf.items[:] = [x for _, x in pending]
        self._last_pivot = None
        self.epoch += 1
        self.counts["time_base_restart"] += 1
        self.last_event = (f"{stream}: {len(pending)} stamps in a row went back by {back:.3f} s: new time base, "
                           f"history of every stream restarted (epoch {self.epoch})")

    def ready(self) -> bool:
        """True once every stream has delivered at least one message."""
        return all(b.stamps for b in self._buf.values())

    def missing(self) -> list[str]:
        return [s for s, b in self._buf.items() if not b.stamps]

    def latest(self, now: float) -> SyncedObservation | None:
        """The newest complete set not yet returned, or None (with the reason counted)."""
        if not self.ready():
            return None
        ref = self._buf[self.streams[0]]
        for k in range(len(ref.stamps) - 1, -1, -1):
            pivot = ref.stamps[k]
            if self._last_pivot is not None and pivot <= self._last_pivot:
                self.counts["no_new"] += 1
                return None
            match = self._match(pivot)
            if match is None:
                continue
            items, stamps = match
            oldest = min(stamps.values())
            if now - oldest > self.max_age:
                self.counts["stale"] += 1
                return None
            self._last_pivot = pivot
            return SyncedObservation(pivot, max(stamps.values()), items, stamps, self.epoch)
        self.counts["no_match"] += 1
        return None

    def _match(self, pivot: float):
        items, stamps = {}, {}
        for name, buf in self._buf.items():
            i = bisect.bisect_left(buf.stamps, pivot)
            best = None
            for j in (i - 1, i):
                if 0 <= j < len(buf.stamps) and (best is None or
                                                 abs(buf.stamps[j] - pivot) < abs(buf.stamps[best] - pivot)):
                    best = j
            if best is None or abs(buf.stamps[best] - pivot) > self.tolerance:
                return None
            items[name], stamps[name] = buf.items[best], buf.stamps[best]
        return items, stamps


class ClockMapper:
    """Maps a device clock (e.g. the robot's RobotState.time) onto the host clock that cameras stamp
    with, so joint states keep the robot's own timing but can be synchronised with images.

    offset = min over recent samples of (host receive time - device time): the sample with the least
    transport delay bounds the offset best. The window is short (5 samples: 50 ms of 100 Hz joint
    states) so a device clock that runs at another rate is followed closely: franky-sim's clock runs
    at 0.7-1.0x real time depending on the CPU load, and with 20 samples the mapped stamps fell
    160 ms behind the moment the state was read, so the policy waited that long for joint states to
    match its camera frames.

    A device clock that goes backwards (the device was reset or reconnected, a hardware counter
    wrapped) restarts the mapping from that sample, and `resets` counts it: the old samples would map
    the new clock's times into the past (by the whole step) until they left the window."""

    def __init__(self, window: int = 5):
        from collections import deque

        self._samples: deque[float] = deque(maxlen=window)
        self._last_device: float | None = None
        self.resets = 0

    def update(self, device_time: float, host_time: float) -> float:
        if self._last_device is not None and device_time < self._last_device:
            self._samples.clear()
            self.resets += 1
        self._last_device = device_time
        self._samples.append(host_time - device_time)
        return self.to_host(device_time)

    def to_host(self, device_time: float) -> float:
        if not self._samples:
            raise ValueError("ClockMapper has no samples yet")
        return device_time + min(self._samples)
