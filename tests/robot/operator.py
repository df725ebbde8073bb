"""The operator at the real-time PC, for tests/robot/test_two_hosts.py: runs inside the RT host's network
namespace (rclpy over DDS, the deployment's profile), drives one scenario against the controller there,
prints one JSON line.

    python tests/robot/operator.py cut GPU_NETNS LINK   enable, drive, take the link down, measure the hold,
                                                        bring it up, check the arm stays held until enable
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main() -> dict:
    from mail_msgs.msg import ActionChunk, ControllerStatus, PolicyStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_srvs.srv import Trigger

    from tests.robot.stack import at_rest, drive
    from tests.rosutil import probe, wait_for

    with probe("operator") as p:
        status = p.subscribe(ControllerStatus, "/mail/controller_status")
        p.subscribe(ActionChunk, "/mail/action_chunk", QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        commands = p.subscribe(JointState, "/mail/action_command")
        policy = p.subscribe(PolicyStatus, "/mail/policy_status")
        arrivals = p.arrivals["/mail/action_chunk"]

        def enable() -> tuple[bool, str]:
            client = p.node.create_client(Trigger, "/franka_controller/enable")
            assert client.wait_for_service(timeout_sec=30)
            fut = client.call_async(Trigger.Request())
            wait_for(fut.done, 20, what="enable")
            return fut.result().success, fut.result().message

        wait_for(lambda: status and status[-1].mode == ControllerStatus.MODE_DISABLED, 90, what="controller")
        wait_for(lambda: arrivals and time.time() - arrivals[-1] < 0.5, 120, what="chunks from the GPU host")
        out = {"enable": list(enable())}
        trips = drive(lambda: status[-1], commands, enable, 4.0,  # until it drives at the cut
                      lambda s: s.mode == ControllerStatus.MODE_ENABLED)
        s = status[-1]
        out.update(mode=int(s.mode), reason=s.reason, chunk_age_p50_ms=float(s.chunk_age_p50_ms),
                   chunk_age_min_ms=float(s.chunk_age_min_ms),
                   rejections=dict(zip(s.rejection_names, map(int, s.rejection_counts))),
                   chunks_received=int(s.chunks_received), watchdog_trips_before_cut=trips)
        if policy:
            ps = policy[-1]
            out["policy_drops"] = dict(zip(ps.drop_causes, map(int, ps.drop_counts)))
            out["policy_chunks"] = int(ps.chunks_published)
        netns, link = sys.argv[2], sys.argv[3]
        t_cut = time.time()
        subprocess.run(["ip", "-n", netns, "link", "set", link, "down"], check=True)
        wait_for(lambda: status[-1].mode == ControllerStatus.MODE_HOLDING, 10, what="hold after the cut")
        t_hold = time.time()
        last = max([t for t in arrivals if t <= t_hold], default=t_cut)
        out.update(hold_after_cut_s=t_hold - t_cut, hold_after_last_chunk_s=t_hold - last,
                   hold_reason=status[-1].reason)
        wait_for(lambda: at_rest(commands), 10, what="at rest")
        subprocess.run(["ip", "-n", netns, "link", "set", link, "up"], check=True)
        n = len(arrivals)
        wait_for(lambda: len(arrivals) > n + 3, 60, what="chunks again after the link came back")
        time.sleep(0.5)
        out["held_until_enable"] = status[-1].mode == ControllerStatus.MODE_HOLDING
        out["enable_after"] = list(enable())
        wait_for(lambda: status[-1].mode == ControllerStatus.MODE_ENABLED, 10, what="enabled again")
    return out


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    try:
        result = main()
    except Exception as exc:  # reported to the test
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
