"""`mail-il demo`: the README's main job on the simulated robot, no hardware needed.

Stages, each reported as it finishes: environment check (ROS 2 graph, mail_msgs over DDS) and, as the
stack grows, demonstrations -> training -> closed loop through the ROS stack against franky-sim.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/demo", help="folder for everything the demo produces")


def check_dds(timeout: float = 30.0) -> dict:
    """Two processes exchange an ActionChunk over DDS on a private domain."""
    from mail_policy_node import rosenv

    env = rosenv.ros_environment()
    code = ("import rclpy, sys; from mail_msgs.msg import ActionChunk; rclpy.init(); n=rclpy.create_node('demo_talker');"
            "p=n.create_publisher(ActionChunk,'/mail/demo_check',10); import time; t=time.time()\n"
            "while time.time()-t<%f:\n m=ActionChunk(); m.sequence=7; p.publish(m); rclpy.spin_once(n,timeout_sec=0.05)" % timeout)
    listen = ("import rclpy, sys; from mail_msgs.msg import ActionChunk; rclpy.init(); n=rclpy.create_node('demo_listener');"
              "got=[]; n.create_subscription(ActionChunk,'/mail/demo_check',got.append,10); import time; t=time.time()\n"
              "while not got and time.time()-t<%f: rclpy.spin_once(n,timeout_sec=0.1)\n"
              "sys.exit(0 if got and got[0].sequence==7 else 3)" % timeout)
    t0 = time.monotonic()
    talker = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rc = subprocess.run([sys.executable, "-c", listen], env=env, timeout=timeout + 10).returncode
    finally:
        talker.terminate()
        talker.wait(timeout=10)
    return {"ok": rc == 0, "seconds": round(time.monotonic() - t0, 2), "domain_id": int(env["ROS_DOMAIN_ID"])}


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {}
    print("[demo] 1/1 ROS 2 graph: two processes exchange mail_msgs/ActionChunk over DDS ...", flush=True)
    report["dds"] = check_dds()
    print(f"[demo]     {'ok' if report['dds']['ok'] else 'FAILED'} in {report['dds']['seconds']} s", flush=True)
    (out / "demo_report.json").write_text(json.dumps(report, indent=2))
    print(f"[demo] report: {out / 'demo_report.json'}")
    return 0 if all(stage.get("ok", True) for stage in report.values()) else 1
