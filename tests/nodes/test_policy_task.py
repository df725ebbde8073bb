"""The policy node's `task` parameter with a multi-task checkpoint, real processes over DDS: a tiny policy
trained (a few steps, real bags, real safetensors checkpoint) on two tasks is refused by a node given no
task (an ERROR status naming the tasks, no chunk); a node given either task runs it, and the chunks for the
same inputs differ with the task, each matching the policy run in this process on that task's goal (the
one-hot reaches the policy through the node); a hot swap to a multi-task checkpoint that was not trained on
the node's task is refused and the old policy keeps publishing; the task set at run time switches a running
node to it (a new episode, its chunks saying the task) and starts the node that had none, while a task the
checkpoint does not know is refused.

Three policy nodes run side by side on one checkpoint root (their chunk and status topics remapped apart),
all fed the same constant camera frames and joint state by this process."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.rosutil import feed_constant_sensors, node_process, probe, stop_process, wait_for

pytestmark = pytest.mark.ros
TASKS = ("reach", "push")
NODES = {"none": "", "reach": "reach", "push": "push"}  # node suffix -> its task parameter
SIZE = 32
PIXEL = 90  # every frame of both cameras is this grey: the same inputs, whatever the node's task
ARM = [0.0] * 7
FINGERS = [0.02, 0.02]  # the gripper width in the policy's state: 0.04


def train_two_task(tmp: Path, tasks, folder: Path) -> None:
    """A tiny D-Ma BC policy trained for a few steps on two one-episode bags per task (the same frames and
    joint states, actions +0.5 for the first task and -0.5 for the second); its final checkpoint copied to
    ``folder``."""
    from mail_policy_node.training.config import TrainConfig
    from mail_policy_node.training.trainer import Trainer
    from tests.training.conftest import tiny_config
    from tests.training.test_multitask import write_task_bag

    for i in range(2):
        for task, value in zip(tasks, (0.5, -0.5)):
            write_task_bag(tmp / "bags" / f"{task}{i}", task, n=6, value=value, seed=i)
    cfg = tiny_config([tmp / "bags"], tmp / "run", tmp / "cache", data__tasks=list(tasks), data__val_fraction=0.0,
                      policy__obs_horizon=1, policy__action_horizon=3, train__steps=3, train__val_every=3,
                      train__ckpt_every=3, train__log_every=3)
    summary = Trainer(TrainConfig.from_dict(cfg), progress=False).run()
    shutil.copytree(summary["final_checkpoint"], folder)


@pytest.fixture(scope="module")
def checkpoint_root(tmp_path_factory) -> Path:
    """ckpts/two: trained on reach and push; ckpts/other: on push and pick_place (not reach)."""
    tmp = tmp_path_factory.mktemp("policy_task")
    train_two_task(tmp / "two", TASKS, tmp / "ckpts" / "two")
    train_two_task(tmp / "other", ("push", "pick_place"), tmp / "ckpts" / "other")
    save_benchmark_policy(tmp / "ckpts" / "metaworld")
    return tmp / "ckpts"


def save_benchmark_policy(folder: Path) -> None:
    """A tiny untrained policy in Meta-World's action space (ee_delta_position), on this graph's cameras and
    joint state: everything about it would run here but its actions, which no FR3 executes."""
    from mail_policy_node.model.checkpoint import save_checkpoint
    from mail_policy_node.spec import ACTION_SPACE_EE_DELTA_POSITION, EE_DELTA_POSITION_NAMES, CameraSpec, FeatureSpec
    from tests.model.tiny import tiny_policy

    spec = FeatureSpec(cameras=(CameraSpec("agentview", SIZE, SIZE), CameraSpec("wrist", SIZE, SIZE)),
                       use_joint_state=True, obs_horizon=1, action_horizon=3,
                       action_space=ACTION_SPACE_EE_DELTA_POSITION, action_names=EE_DELTA_POSITION_NAMES)
    save_checkpoint(tiny_policy("d_ma_bc", spec=spec), folder)


class Graph:
    """The probe, the three policy nodes on checkpoint 'two' and the sensor feeder."""

    def __init__(self, root: Path, p):
        from mail_msgs.msg import ActionChunk, PolicyStatus
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from mail_policy_node.nodes.qos import STATUS_QOS

        self.p = p
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.chunks = {n: p.subscribe(ActionChunk, f"/{n}/action_chunk", reliable) for n in NODES}
        self.status = {n: p.subscribe(PolicyStatus, f"/{n}/policy_status", STATUS_QOS) for n in NODES}
        self.nodes = {n: node_process("mail_policy_node.nodes.policy_node", f"policy_{n}",
                                      {"checkpoint_root": str(root), "checkpoint": "two", "task": task,
                                       "rate_hz": 10.0, "cpu_threads": 1},
                                      remaps={"/mail/action_chunk": f"/{n}/action_chunk",
                                              "/mail/policy_status": f"/{n}/policy_status"})
                      for n, task in NODES.items()}
        self.stop = threading.Event()
        self.feeder = threading.Thread(target=self._feed, daemon=True)
        self.feeder.start()

    def _feed(self):
        """Both cameras at 20 Hz, the same frame every time, with a joint state stamped with each."""
        feed_constant_sensors(self.p, self.stop, PIXEL, SIZE, ARM, FINGERS)

    def close(self) -> dict[str, str]:
        self.stop.set()
        self.feeder.join(timeout=5)
        return {n: stop_process(proc) for n, proc in self.nodes.items()}

    def wait_chunks(self, node: str, n: int, timeout: float = 90.0):
        wait_for(lambda: len(self.chunks[node]) >= n, timeout,
                 what=f"{n} chunks from the {node} node (status: {self.status[node][-1:]})")


@pytest.fixture(scope="module")
def graph(checkpoint_root):
    with probe() as p:
        g = Graph(checkpoint_root, p)
        try:
            yield g
        finally:
            g.close()


def actions(chunk) -> np.ndarray:
    return np.asarray(chunk.actions).reshape(chunk.horizon, chunk.dimension)


def test_a_multi_task_checkpoint_without_a_task_is_refused(graph):
    from mail_msgs.msg import PolicyStatus

    # the nodes given a task run on the same inputs: by then the one without a task would have acted
    for n in ("reach", "push"):
        graph.wait_chunks(n, 3)
    s = wait_for(lambda: graph.status["none"][-1] if graph.status["none"] else None, 10,
                 what="a status from the node without a task")
    assert s.state == PolicyStatus.STATE_ERROR, s
    assert "refused" in s.reason and "trained on the tasks ['reach', 'push']" in s.reason, s.reason
    assert "task parameter" in s.reason, s.reason
    assert (s.checkpoint, s.policy_id, s.chunks_published) == ("", "", 0), s
    assert graph.nodes["none"].poll() is None  # it stays up, for a valid checkpoint to be set
    assert graph.chunks["none"] == []


def test_each_task_runs_and_its_goal_reaches_the_policy(graph, checkpoint_root):
    from mail_msgs.msg import PolicyStatus

    from mail_policy_node.engine.engine import EngineConfig
    from mail_policy_node.engine.inputs import Observation
    from mail_policy_node.runtime import load_policy

    for n in ("reach", "push"):
        graph.wait_chunks(n, 3)
        s = wait_for(lambda n=n: next((m for m in reversed(graph.status[n]) if m.state == PolicyStatus.STATE_RUNNING),
                                      None), 10, what=f"the {n} node running")
        assert s.checkpoint == "two" and s.chunks_published >= 1, s
    first = {n: graph.chunks[n][0] for n in ("reach", "push")}
    assert first["reach"].policy_id == first["push"].policy_id != ""  # one checkpoint
    assert (first["reach"].task, first["push"].task) == ("reach", "push")  # each chunk says its task
    for n in ("reach", "push"):  # deterministic: constant inputs, the same chunk every time
        assert all(np.allclose(actions(c), actions(first[n]), atol=1e-6) for c in graph.chunks[n][1:3]), n
    # the same inputs, another task: another chunk
    assert not np.allclose(actions(first["reach"]), actions(first["push"]), atol=1e-3), actions(first["reach"])
    # and each is the policy's chunk on its task's one-hot goal (loaded here as the node loads it)
    for task, goal in (("reach", [1.0, 0.0]), ("push", [0.0, 1.0])):
        loaded = load_policy(str(checkpoint_root), "two", EngineConfig(), task=task)
        assert loaded.goal.tolist() == goal
        frame = np.full((SIZE, SIZE, 3), PIXEL, np.uint8)
        out = loaded.engine.step(Observation(stamp=1.0, images={"agentview": frame, "wrist": frame},
                                             state=np.float32(ARM + [sum(FINGERS)]), goal=loaded.goal))
        np.testing.assert_allclose(actions(first[task]), out.actions[0], atol=1e-4, err_msg=task)


def parameter_client(graph, node: str):
    """A parameter client of policy node ``node``, its services up."""
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(graph.p.node, f"policy_{node}")
    assert client.wait_for_services(timeout_sec=30)
    return client


def set_parameter(graph, node: str, name: str, value):
    """Set one parameter of a policy node over its parameter service; the service's result."""
    from rclpy.parameter import Parameter

    future = parameter_client(graph, node).set_parameters([Parameter(name, value=value)])
    wait_for(future.done, 60, what=f"set {name} on {node}")
    return future.result().results[0]


def test_a_swap_to_a_checkpoint_without_the_nodes_task_is_refused(graph):
    from mail_msgs.msg import PolicyStatus

    graph.wait_chunks("reach", 3)
    chunks = graph.chunks["reach"]
    policy_id = chunks[0].policy_id
    r = set_parameter(graph, "reach", "checkpoint", "other")  # trained on push and pick_place: not on reach
    assert not r.successful, "the swap to 'other' was accepted"
    assert "'other' refused" in r.reason and "'reach' is not one this policy was trained on" in r.reason, r.reason
    assert "['push', 'pick_place']" in r.reason, r.reason
    n = len(chunks)
    wait_for(lambda: len(chunks) >= n + 3, 30, what="chunks after the refused swap")
    assert all(c.policy_id == policy_id and c.checkpoint == "two" for c in chunks)
    seqs = [c.sequence for c in chunks]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"missed or repeated chunks: {seqs}"
    future = parameter_client(graph, "reach").get_parameters(["checkpoint", "task"])
    wait_for(future.done, 10, what="the parameters")
    assert [v.string_value for v in future.result().values] == ["two", "reach"]
    s = wait_for(lambda: graph.status["reach"][-1] if graph.status["reach"][-1].chunks_published > n else None, 10,
                 what="a newer status")
    assert s.state == PolicyStatus.STATE_RUNNING and s.checkpoint == "two" and s.policy_id == policy_id, s


def test_a_policy_no_fr3_executes_is_refused_at_start(graph, checkpoint_root):
    """A node started on a Meta-World checkpoint (hand steps and grip effort; cameras and joint state as this
    graph has them) refuses it at load, saying why, and publishes nothing, while the others run on the same
    inputs. (A hot swap to it is refused anyway: its action space is not the running policy's.)"""
    from mail_msgs.msg import ActionChunk, PolicyStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from mail_policy_node.nodes.qos import STATUS_QOS

    status = graph.p.subscribe(PolicyStatus, "/mw/policy_status", STATUS_QOS)
    chunks = graph.p.subscribe(ActionChunk, "/mw/action_chunk", QoSProfile(depth=50,
                                                                          reliability=ReliabilityPolicy.RELIABLE))
    proc = node_process("mail_policy_node.nodes.policy_node", "policy_mw",
                        {"checkpoint_root": str(checkpoint_root), "checkpoint": "metaworld", "rate_hz": 10.0,
                         "cpu_threads": 1},
                        remaps={"/mail/action_chunk": "/mw/action_chunk", "/mail/policy_status": "/mw/policy_status"})
    try:
        s = wait_for(lambda: next((m for m in status if m.state == PolicyStatus.STATE_ERROR), None) or
                     (proc.poll() is not None and pytest.fail(f"the node ended: {stop_process(proc)[-3000:]}")),
                     60, what="the Meta-World checkpoint refused")
        assert "not an FR3 command" in s.reason and "ee_delta_position" in s.reason, s.reason
        n = len(graph.chunks["reach"])
        graph.wait_chunks("reach", n + 5)  # half a second of inputs later
        assert chunks == [] and status[-1].chunks_published == 0, status[-1]
        assert proc.poll() is None  # up, for a checkpoint it can run
    finally:
        stop_process(proc)


def test_the_task_set_at_run_time_switches_the_policy_and_starts_a_node_that_had_none(graph):
    """Run last: it changes the push node's task and starts the node without one."""
    from mail_msgs.msg import PolicyStatus

    for n in ("reach", "push"):
        graph.wait_chunks(n, 3)
    reach = actions(graph.chunks["reach"][-1])
    chunks = graph.chunks["push"]
    r = set_parameter(graph, "push", "task", "pick_place")  # not a task of the checkpoint: refused
    assert not r.successful and "'pick_place' is not one this policy was trained on" in r.reason, r.reason
    n = len(chunks)
    graph.wait_chunks("push", n + 3)
    assert all(c.task == "push" for c in chunks)  # it runs on as it was

    r = set_parameter(graph, "push", "task", "reach")
    assert r.successful, r.reason
    n = len(chunks)
    graph.wait_chunks("push", n + 5)
    switched = [c for c in chunks[n:] if c.task == "reach"]
    assert switched and all(c.task == "reach" for c in chunks[chunks.index(switched[0]):]), [c.task for c in chunks]
    assert all(c.policy_id == chunks[0].policy_id for c in switched)  # the same checkpoint, another task
    for c in switched:  # the reach policy's chunk now: the same inputs, the reach goal
        np.testing.assert_allclose(actions(c), reach, atol=1e-4)
    s = wait_for(lambda: graph.status["push"][-1] if graph.status["push"][-1].task == "reach" else None, 10,
                 what="the push node's status on the reach task")
    assert s.state == PolicyStatus.STATE_RUNNING, s

    # the node that had no task (its checkpoint refused): the task set, it loads the checkpoint and runs it
    assert graph.chunks["none"] == []
    r = set_parameter(graph, "none", "task", "push")
    assert r.successful, r.reason
    graph.wait_chunks("none", 3)
    assert all(c.task == "push" and c.checkpoint == "two" for c in graph.chunks["none"])
    push = actions(graph.chunks["push"][0])  # the push node's chunks before it switched
    np.testing.assert_allclose(actions(graph.chunks["none"][-1]), push, atol=1e-4)
    s = wait_for(lambda: graph.status["none"][-1] if graph.status["none"][-1].state == PolicyStatus.STATE_RUNNING
                 else None, 10, what="the node without a task running")
    assert s.task == "push" and s.checkpoint == "two", s
