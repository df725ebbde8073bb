"""rclpy nodes: one per file, each a thin adapter over the ROS-free core, and `run` for their main()."""

from __future__ import annotations

import logging
import sys
import time

# Discovery matches the two ends of a connection separately: a publisher can see a subscriber a few
# hundred ms before that subscriber accepts its messages (on a loaded machine the first frames of a
# recording were lost that way).
DISCOVERY_SETTLE_S = 0.5


def run(node_class, args=None) -> None:
    """Init rclpy, spin one node until Ctrl-C or an external shutdown, then destroy it and shut down
    (Jazzy style). Every node spins on a SingleThreadedExecutor: rclpy's MultiThreadedExecutor was
    measured burning 78 % of a core to deliver 100 Hz joint states and 20 Hz images (and it lost 45 %
    of them), against 10 % for the single-threaded one. A node that must keep taking messages while
    one of its callbacks blocks (the policy node loading a checkpoint in its parameter callback) puts
    those subscriptions on ``companion_nodes``, each spun by its own single-threaded executor thread."""
    import threading

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    rclpy.init(args=args)
    node = construct(node_class)
    forward_python_logging(node)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    companions = []
    for other in getattr(node, "companion_nodes", ()):
        ex = SingleThreadedExecutor()
        ex.add_node(other)
        threading.Thread(target=_spin_quietly, args=(ex,), name=f"spin-{other.get_name()}", daemon=True).start()
        companions.append(ex)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for ex in companions:
            ex.shutdown(timeout_sec=1.0)
        node.destroy_node()
        shut_down()
    if getattr(node, "exit_code", 0):  # the node ended itself on a fault (e.g. the controller's loop died)
        sys.exit(node.exit_code)


class _RosLogHandler(logging.Handler):
    """Python logging records (the ROS-free core logs through ``logging``) into a node's ROS logger, so
    they reach /rosout and the ROS log files with the node's name. One call site per severity: rclpy
    refuses a call site that logs at two."""

    def __init__(self, logger):
        super().__init__()
        self.ros_logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name}: {record.getMessage()}"
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            elif record.levelno >= logging.INFO:
                self.ros_logger.info(text)
            else:
                self.ros_logger.debug(text)
        except Exception:  # noqa: BLE001 - a log line must never take the node down
            self.handleError(record)


def forward_python_logging(node, package: str = "mail_policy_node") -> logging.Handler:
    """Route the package's Python logging (info and above) to ``node``'s ROS logger; returns the handler."""
    handler = _RosLogHandler(node.get_logger())
    logger = logging.getLogger(package)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # not printed a second time by the root logger
    return handler


def refuse_sim_time(node) -> None:
    """Raise when the node was started with ``use_sim_time`` true. Cameras, the bag player and the chunk
    recorder run on the host's clocks (real cameras stamp with it, the player shifts recorded stamps to
    now); a /clock would be ignored without a word, so it is refused with one. The nodes that follow the
    simulated world's clock (sim_world, policy, controller against a simulated arm) take a `NodeClock`."""
    if node.get_parameter("use_sim_time").value:
        raise ValueError("use_sim_time is not supported by this node: it runs on the host's clocks (the simulator's "
                         "cameras take the world's stamps, the bag player shifts stamps to now); start it with "
                         "use_sim_time false")


# Polling step of a wait on simulated time (wall seconds): /clock comes every CLOCK_STEP_S of simulated time
SIM_TIME_POLL_S = 0.0005


class Cadence:
    """A periodic loop's count of its cycles and of those that overran: the work of the cycle before (or the
    host, not scheduling the loop) ran past the cycle's due time, so it started late (the loop does not burst
    to catch up). The cadence report a user reads beside the achieved rate: a loaded host shows here first."""

    def __init__(self):
        self.cycles = 0
        self.overruns = 0


class NodeClock:
    """The clock a node times itself by. On the host's clocks (``use_sim_time`` false, always on a real
    robot): ``monotonic`` for intervals (watchdog, pacing, jitter) and ``wall`` for stamps, the system clock.
    With ``use_sim_time`` (the `sim` profile) both read ROS time, which the simulated world publishes on
    /clock from its physics: stamps, chunk schedules, the watchdog and the loops' periods are then seconds
    of the simulated arm however fast the host runs it, as the synchronous evaluation's are. A node that
    must not follow a simulated clock (a controller connected to a real arm) passes ``refuse`` = why not."""

    def __init__(self, node, refuse: str = ""):
        self.sim = bool(node.get_parameter("use_sim_time").value)
        if self.sim and refuse:
            raise ValueError(f"use_sim_time refused: {refuse}")
        if self.sim:
            ros = node.get_clock()
            self.monotonic = self.wall = lambda: ros.now().nanoseconds * 1e-9
        else:
            self.monotonic, self.wall = time.monotonic, time.time

    def running(self) -> bool:
        """False while a simulated clock has not started (no /clock yet: ROS time reads 0)."""
        return not self.sim or self.monotonic() > 0.0

    def sleep_until(self, t: float, stop, max_wall: float) -> bool:
        """Wait until ``monotonic()`` reaches ``t``, at most ``max_wall`` seconds of the host's clock (a
        simulated clock that stopped must not stop the caller's loop); a simulated clock's wait also ends when
        the event ``stop`` is set. Returns False when a simulated clock did not reach ``t`` (it stalled, or
        ``stop`` was set)."""
        # time.sleep, not stop.wait: a timed Event.wait never returned in a process whose clock libfaketime
        # shifts (the controller's clock-offset test); stop is looked at after each sleep
        if not self.sim:
            delay = t - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, max_wall))
            return True
        deadline = time.monotonic() + max_wall
        # the simulated clock never runs ahead of the wall clock (the world paces its physics to at most real
        # time), so the wall-clock time to t is slept at once, and only the rest, if the simulation lags, polled
        time.sleep(min(max(t - self.monotonic(), 0.0), max_wall))
        while self.monotonic() < t:
            if stop.is_set() or time.monotonic() >= deadline:
                return False
            time.sleep(SIM_TIME_POLL_S)
        return True

    def wait_for_cycle(self, due: float, stop, max_wall: float, cadence: Cadence) -> float:
        """A periodic loop's wait for its next cycle, due at ``due``, counted in ``cadence``. Returns the
        time that cycle counts from: ``due``, or now where the loop overran (no burst of catch-up cycles) or
        a simulated clock did not reach ``due`` within ``max_wall`` (the loop goes on; not an overrun)."""
        now = self.monotonic()
        cadence.cycles += 1
        if due <= now:
            cadence.overruns += 1
            return now
        return due if self.sleep_until(due, stop, max_wall) else self.monotonic()


def construct(node_class):
    """The node (rclpy initialised), or, when its constructor refuses the configuration (a parameter out
    of its range, an unsafe combination), exit 2 saying why in one line, without a traceback."""
    try:
        return node_class()
    except Exception as exc:  # noqa: BLE001 - any start-up failure: said in one line, no traceback
        print(f"[{node_class.__name__}] cannot start: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        shut_down()
        sys.exit(2)


def shut_down(context=None) -> None:
    """Shut rclpy's context down unless it already is, where a signal may do so at the same moment. rclpy's
    signal handler shuts the context down from a thread of its own without the lock ``try_shutdown`` takes,
    so between try_shutdown's check and its shutdown the context can go down and rclpy raises "rcl_shutdown
    already called" (seen in `make test`: the controller stopped by SIGINT exited 1 with that traceback after
    a clean run). Down either way is what was asked: only an error that leaves the context up is raised."""
    import rclpy

    try:
        rclpy.try_shutdown(context=context)
    except RuntimeError:
        if rclpy.ok(context=context):
            raise


def _spin_quietly(executor) -> None:
    from rclpy.executors import ExternalShutdownException

    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


def wait_for_listeners(missing, timeout: float, sleep, settle: float = DISCOVERY_SETTLE_S) -> list[str]:
    """Before a stream that is played once (a recording): wait, at most ``timeout`` seconds, until
    ``missing()`` (what is still not there: subscribers, a loaded policy) is empty, then ``settle``
    seconds more so the other ends see the publisher too. ``sleep(seconds)`` waits and must keep the
    caller's callbacks running if ``missing`` depends on them. Returns what was still missing."""
    deadline = time.monotonic() + timeout
    while (left := missing()) and time.monotonic() < deadline:
        sleep(0.05)
    if left:
        return left
    end = time.monotonic() + settle
    while time.monotonic() < end:
        sleep(0.05)
    return []


def topic_remaps(argv=None) -> list[str]:
    """The ``--ros-args`` topic remappings of this process (``-r from:=to`` / ``--remap``), without the
    node-name and namespace rules: for a companion node, which must not take its parent's name."""
    argv = list(sys.argv if argv is None else argv)
    out, inside = [], False
    for i, arg in enumerate(argv):
        if arg == "--ros-args":
            inside = True
        elif arg == "--":
            inside = False
        elif inside and arg in ("-r", "--remap") and i + 1 < len(argv):
            source, sep, target = argv[i + 1].partition(":=")
            source = source.split(":")[-1]  # a "node:" prefix named the parent; topic names have no ':'
            if sep and not source.startswith("__"):
                out += ["-r", f"{source}:={target}"]
    return ["--ros-args", *out] if out else []
