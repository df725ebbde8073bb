"""rclpy nodes: one per file, each a thin adapter over the ROS-free core, and `run` for their main()."""

from __future__ import annotations

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
    try:
        node = node_class()
    except Exception as exc:  # a refused configuration: say why in one line, no traceback
        print(f"[{node_class.__name__}] cannot start: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        sys.exit(2)
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
        rclpy.try_shutdown()
    if getattr(node, "exit_code", 0):  # the node ended itself on a fault (e.g. the controller's loop died)
        sys.exit(node.exit_code)


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
