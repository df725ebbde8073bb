"""Approximate-time synchronisation of observation streams (cameras, joint state), without ROS.

The policy node feeds every accepted message in with its header stamp; at each control tick it asks
for the newest complete observation: one message per stream, all within `tolerance` of a pivot stamp
taken from the reference stream (the first one), and no older than `max_age` at the tick. Nothing is
returned until every stream has data. Sets are returned at most once (a tick without a newer set gets
None and is counted as `no_new`), and a tick whose newest set is too old is counted as `stale`.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass(frozen=True)
class SyncedObservation:
    stamp: float  # pivot stamp [s]: the reference stream's acquisition time
    newest_stamp: float  # newest acquisition time in the set (ActionChunk.header.stamp uses it)
    items: dict[str, Any]  # stream name -> payload
    stamps: dict[str, float]  # stream name -> that payload's stamp [s]


@dataclass
class _Stream:
    stamps: list[float] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)


class ObservationSynchronizer:
    def __init__(self, streams: Sequence[str], tolerance: float = 0.05, max_age: float = 0.2,
                 buffer_seconds: float = 2.0):
        if not streams or len(set(streams)) != len(streams):
            raise ValueError(f"streams must be unique and non-empty, got {list(streams)}")
        if tolerance <= 0 or max_age <= 0 or buffer_seconds <= max_age:
            raise ValueError(f"need tolerance > 0, max_age > 0, buffer_seconds > max_age; got "
                             f"{tolerance}, {max_age}, {buffer_seconds}")
        self.streams = tuple(streams)
        self.tolerance = tolerance
        self.max_age = max_age
        self.buffer_seconds = buffer_seconds
        # "duplicate": messages dropped; "no_new", "stale", "no_match": outcomes of ticks without a set
        self.counts: Counter[str] = Counter()
        self._buf = {s: _Stream() for s in self.streams}
        self._last_pivot: float | None = None

    def reset(self) -> None:
        for s in self._buf.values():
            s.stamps.clear()
            s.items.clear()
        self._last_pivot = None

    def add(self, stream: str, stamp: float, item: Any) -> None:
        """Buffer one message. Out-of-order arrivals are inserted in stamp order."""
        buf = self._buf[stream]
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
            return SyncedObservation(pivot, max(stamps.values()), items, stamps)
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
    match its camera frames.""" 

    def __init__(self, window: int = 5):
        from collections import deque

        self._samples: deque[float] = deque(maxlen=window)

    def update(self, device_time: float, host_time: float) -> float:
        self._samples.append(host_time - device_time)
        return self.to_host(device_time)

    def to_host(self, device_time: float) -> float:
        if not self._samples:
            raise ValueError("ClockMapper has no samples yet")
        return device_time + min(self._samples)
