"""`mail-il up PROFILE`: start a bringup profile's nodes as separate processes, without `ros2 launch`.

    mail-il up sim                                  # simulated FR3 and the shipped reach checkpoint
    mail-il up sim checkpoint:=my_policy --duration 60
    mail-il up real_robot --list-arguments          # what the real-robot profile takes, with defaults

Each node runs as `python -m <module> --ros-args -r __node:=<name> --log-level <level> --params-file
<profile.yaml> -p ...` in one private ROS graph (mail_policy_node.rosenv), with the same parameters the
launch files pass (mail_bringup.graph). Output lines are prefixed with the node name; SIGINT/SIGTERM are
forwarded; a node that exits is reported with its exit code and last output, and restarted when its
spec says `respawn` (graph.RESPAWN_DELAY_S later, at most graph.RESPAWN_MAX_RETRIES times). A node without
respawn that exits stops the whole profile with a non-zero exit, because the stack is then incomplete
(e.g. no controller holding the arm); only a node that `ends_profile` may end it normally (exit code 0).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from mail_bringup.graph import (LAUNCH_ARGUMENTS, LOG_LEVELS, MACHINES, NODE_SETTINGS, PROFILES, RESPAWN_DELAY_S,
                                RESPAWN_MAX_RETRIES, ConfigNotFound, NodeSpec, Profile, argument_defaults, as_text,
                                on_machine, params_file_in_namespace, parse_arguments, profile)


def node_command(spec: NodeSpec, params_file, namespace: str = "", log_level: str = "info") -> list[str]:
    """The node's command line. `params_file` is the profile's YAML (already renamed for `namespace`,
    graph.params_file_in_namespace), or None for a node started without one."""
    cmd = [sys.executable, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}"]
    if namespace.strip("/"):
        cmd += ["-r", f"__ns:=/{namespace.strip('/')}"]
    for source, target in spec.remaps:
        cmd += ["-r", f"{source}:={target}"]
    cmd += ["--log-level", log_level]
    if params_file is not None:
        if not os.path.isfile(params_file):
            raise ConfigNotFound(f"parameter file {params_file} not found; refusing to start {spec.name} on its "
                                 "code defaults")
        cmd += ["--params-file", str(params_file)]
    for key, value in spec.launch_parameters().items():
        cmd += ["-p", f"{key}:={json.dumps(value)}"]
    return cmd


@dataclass
class _Managed:
    spec: NodeSpec
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    tail: deque = field(default_factory=lambda: deque(maxlen=20))


class Supervisor:
    """Starts, watches and stops the processes of one profile. Usable from tests."""

    def __init__(self, prof: Profile, env: dict[str, str] | None = None, echo: bool = True,
                 max_restarts: int = RESPAWN_MAX_RETRIES, namespace: str = "", log_level: str = "info",
                 respawn_delay: float = RESPAWN_DELAY_S):
        from mail_policy_node import rosenv

        self.profile = prof
        self.env = env if env is not None else rosenv.ros_environment()
        self.echo = echo
        self.max_restarts = max_restarts
        self.respawn_delay = respawn_delay
        self.namespace, self.log_level = namespace, log_level
        self.params_file = None
        if prof.params_file is not None:
            if not os.path.isfile(prof.params_file):
                raise ConfigNotFound(f"parameter file {prof.params_file} of profile {prof.name!r} not found; "
                                     "refusing to start its nodes on their code defaults")
            self.params_file = params_file_in_namespace(prof.params_file, namespace)
        self.nodes = {n.name: _Managed(n) for n in prof.nodes}
        self.failed: str | None = None
        self.finished = False  # a node whose exit ends the profile has exited normally
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        for m in self.nodes.values():
            self._spawn(m)

    def _spawn(self, m: _Managed) -> None:
        cmd = node_command(m.spec, self.params_file, self.namespace, self.log_level)
        m.proc = subprocess.Popen(cmd, env=self.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        threading.Thread(target=self._pump, args=(m, m.proc), daemon=True).start()
        self._say(f"started {m.spec.name} (pid {m.proc.pid})")

    def _pump(self, m: _Managed, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            line = line.rstrip("\n")
            m.tail.append(line)
            if self.echo:
                print(f"[{m.spec.name}] {line}", flush=True)

    def poll(self) -> None:
        """Check every process once: report exits, respawn or fail the profile."""
        now = time.monotonic()
        for m in self.nodes.values():
            if m.proc is None:
                if now >= m.next_start and not self.finished:
                    self._spawn(m)
                continue
            rc = m.proc.poll()
            if rc is None:
                continue
            self._say(f"{m.spec.name} exited with code {rc}; last output:\n    " + "\n    ".join(list(m.tail)[-5:]))
            m.proc = None
            if rc == 0 and m.spec.ends_profile:
                self.finished = True
                m.next_start = float("inf")
            elif m.spec.respawn and m.restarts < self.max_restarts:
                m.restarts += 1
                m.next_start = now + self.respawn_delay
                self._say(f"respawning {m.spec.name} (restart {m.restarts}/{self.max_restarts})")
            else:
                self.failed = f"{m.spec.name} exited with code {rc}"

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send a signal to one node (fault injection in tests)."""
        proc = self.nodes[name].proc
        if proc is not None:
            proc.send_signal(sig)

    def alive(self, name: str) -> bool:
        proc = self.nodes[name].proc
        return proc is not None and proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        procs = [m.proc for m in self.nodes.values() if m.proc is not None and m.proc.poll() is None]
        for p in procs:
            p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for m in self.nodes.values():
            m.proc = None

    def run(self, duration: float | None = None) -> int:
        stop = threading.Event()
        previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
        self.start()
        t_end = None if duration is None else time.monotonic() + duration
        try:
            while not stop.is_set() and self.failed is None and not self.finished and \
                    (t_end is None or time.monotonic() < t_end):
                self.poll()
                stop.wait(0.2)
        finally:
            self.stop()
            for s, h in previous.items():
                signal.signal(s, h)
        if self.failed:
            self._say(f"profile {self.profile.name} stopped: {self.failed}")
            return 1
        return 0

    def _say(self, text: str) -> None:
        with self._lock:
            print(f"[up] {text}", flush=True)


# -- `mail-il up` ------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("profile", choices=PROFILES, help="which node graph to start")
    parser.add_argument("arguments", nargs="*", metavar="ARG:=VALUE",
                        help="the launch file's arguments (checkpoint:=reach_dma, namespace:=lab, log_level:=debug; "
                             "`ros2 launch mail_bringup PROFILE.launch.py -s` or --list-arguments lists them) or any "
                             "node parameter as node.param:=value (policy_node.rate_hz:=5)")
    parser.add_argument("--list-arguments", action="store_true", help="print the profile's arguments and exit")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: derived)")


def run(args) -> int:
    from mail_policy_node import rosenv

    try:
        if args.list_arguments:
            print(describe_arguments(args.profile))
            return 0
        overrides, settings = parse_arguments(args.profile, args.arguments)
        prof = on_machine(profile(args.profile, overrides), settings.pop("machine", "all"))
        sup = Supervisor(prof, env=rosenv.ros_environment(args.domain_id), **settings)
    except (ConfigNotFound, ValueError) as exc:
        print(f"[up] {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"[up] profile {prof.name}: {', '.join(n.name for n in prof.nodes)} "
          f"(ROS_DOMAIN_ID={sup.env['ROS_DOMAIN_ID']}, parameters {prof.params_file})", flush=True)
    return sup.run(args.duration)


def describe_arguments(profile_name: str) -> str:
    """The profile's arguments with their defaults (from its YAML) and descriptions, as `ros2 launch -s`."""
    defaults = argument_defaults(profile(profile_name))
    lines = [f"Arguments of profile {profile_name} (ARG:=VALUE):"]
    for arg in LAUNCH_ARGUMENTS[profile_name]:
        targets = ", ".join(f"{n}.{p}" for n, p in arg.targets)
        lines.append(f"  {arg.name} (default: {as_text(defaults[arg.name])!r})\n      {arg.description} [{targets}]")
    for name, (default, description) in NODE_SETTINGS.items():
        choices = {"log_level": f": {', '.join(LOG_LEVELS)}", "machine": f": {', '.join(MACHINES)}"}.get(name, "")
        lines.append(f"  {name} (default: {default!r})\n      {description}{choices}")
    return "\n".join(lines)
