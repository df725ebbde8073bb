"""The controller side without ROS and without a robot: targets through the SafetyFilter to a FrankyArm in dry run.

    python examples/dry_run_arm.py

The arm is built from the controller node's defaults: no robot address and dry_run true, so it opens no
connection at all (franky is not even imported) and a stand-in echoes each command as the measured state.
"""

import sys
import time
from collections import Counter

import numpy as np

from mail_policy_node.control.franky_arm import FrankyArm
from mail_policy_node.control.params import controller_defaults, controller_setup
from mail_policy_node.control.safety import CommandState, SafetyFilter, check_command

# The node's configuration from its parameter defaults: dry run, no robot_ip, the runbook's lowest stage
# (relative_dynamics_factor 0.1, so joint velocities of at most 0.05-0.13 rad/s), 100 Hz.
setup = controller_setup({})
safety = setup.controller.safety
arm = FrankyArm(setup.arm)
arm.connect()  # no host: returns at once, nothing opened
start = np.array(controller_defaults()["dry_run_start"])
arm.send(CommandState.at_rest(start))  # as the node does: the stand-in arm starts here, at rest
print(f"arm: host={setup.arm.host!r} dry_run={setup.arm.dry_run} connected={arm.robot is not None}; "
      f"{1 / safety.cycle_period:.0f} Hz, joint speed limits {np.round(safety.velocity_limit, 3)} rad/s")

# The filter is a pure function: (what was commanded last cycle, requested target) -> next command. It
# never raises on bad data; when in doubt it brakes (a jerk-limited stop) and says why in `hits`.
filt = SafetyFilter(safety)
cmd = CommandState.at_rest(arm.read_state().q)
targets = [
    ("0.03 rad on joint 1", start + [0.03, 0, 0, 0, 0, 0, 0], 0.08),
    ("1 rad on joint 1 at once", start + [1.0, 0, 0, 0, 0, 0, 0], 0.2),  # too far, too fast; gripper past 8 cm
    ("NaN (a broken policy)", np.full(7, np.nan), None),  # while the arm is still moving from the last one
    ("TCP under the table", start + [0, 1.2, 0, 0, 0, 0, 0], None),  # joint 2 forward: the TCP at z < 0
]
violations = 0
for label, target, width in targets:
    hits, q0, peak = Counter(), cmd.q.copy(), 0.0
    next_tick = time.monotonic()
    for _ in range(40):  # 0.4 s of control cycles at the control rate
        result = filt.step(cmd, target, gripper_target=width)
        violations += len(check_command(safety, cmd, result.command))  # the fuzzer's independent check
        hits.update(result.hits.names())
        cmd = result.command
        arm.send(cmd, arm.read_state().q)  # dry run: remembered as the stand-in's state, sent nowhere
        peak = max(peak, float(np.abs(cmd.dq).max()))
        next_tick += safety.cycle_period
        time.sleep(max(0.0, next_tick - time.monotonic()))
    rest = "at rest" if cmd.at_standstill else f"moving {np.abs(cmd.dq).max():.3f} rad/s"
    print(f"{label}: moved {np.abs(cmd.q - q0).max():.4f} rad, peak {peak:.3f} rad/s, now {rest}")
    print(f"    filter hits (cycles of 40): {dict(hits) or 'none'}")
    if hits["invalid_input"] or hits["workspace"]:
        print("    -> held: every joint braked to a stop instead of following the target")

# Limits are checked on exactly the numbers sent (q, and dq, ddq, jerk by finite differences).
print(f"limit violations in the commands: {violations}")
sent = "nothing" if arm.sent == 0 else f"{arm.sent} commands"
print(f"sent to a robot: {sent} (moves={arm.moves}, franky imported: {'franky' in sys.modules})")
arm.close()
sys.exit(0 if violations == 0 and arm.sent == 0 else 1)
