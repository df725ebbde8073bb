"""The `replay` profile through the real `ros2 launch` from the plain install: it ends by itself once the
bag has been played (the bag player's normal exit shuts the launch down), and the recorder has closed
a complete output bag by then. The `mail-il up` twin: tests/replay_profile/test_replay_profile.py."""

import numpy as np
import pytest

from tests.launch import Launch, alive, install_env
from tests.policy.ckpts import make_checkpoint
from tests.replay_profile.test_replay_profile import STEPS, write_demo_bag
from tests.rosutil import private_domain

pytestmark = pytest.mark.ros


def test_replay_launch_ends_by_itself_with_a_complete_bag(tmp_path):
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader

    from mail_msgs.msg import ActionChunk

    write_demo_bag(tmp_path / "demo")
    make_checkpoint(tmp_path / "ckpts" / "tiny", seed=0)
    with private_domain():
        env = install_env("plain")
        launch = Launch(env, "replay", f"bag:={tmp_path / 'demo'}", f"output_bag:={tmp_path / 'out'}",
                        f"checkpoint_root:={tmp_path / 'ckpts'}", "checkpoint:=tiny", cwd=tmp_path)
        try:
            rc = launch.wait(timeout=180)  # no Ctrl-C: the end of the bag ends the launch
        finally:
            launch.close()
    out = launch.output()
    assert rc == 0, out[-3000:]
    assert "bag_player finished: profile replay ends" in out, out[-3000:]
    assert not [pid for pid in launch.pids().values() if alive(pid)]
    with Reader(tmp_path / "out") as reader:
        conns = [c for c in reader.connections if c.topic == "/mail/action_chunk"]
        chunks = [deserialize_message(bytes(raw), ActionChunk) for _, _, raw in reader.messages(connections=conns)]
    # as in the mail-il up twin: J = 3, a chunk per 3 observation sets, from the first one on
    seqs = [c.sequence for c in chunks]
    assert STEPS // 3 - 2 <= len(chunks) <= STEPS // 3, seqs
    assert seqs == list(range(len(seqs))), seqs
    assert all(len(c.actions) == 3 * 8 and np.isfinite(c.actions).all() for c in chunks)
