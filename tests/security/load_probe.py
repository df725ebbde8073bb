"""Child process of test_hostile_checkpoints: load one checkpoint, print time and peak memory as JSON.

    python tests/security/load_probe.py load FOLDER        # load_checkpoint (the CLI commands' path)
    python tests/security/load_probe.py node ROOT NAME     # resolve_checkpoint + InferenceEngine.from_checkpoint
                                                           # (the policy node's path, runtime.load_policy)

A process of its own per checkpoint so that ru_maxrss (the peak resident set, which never goes down)
belongs to that load alone. The address space is capped so that a regression fails instead of taking
the machine's memory (the issue saw 3.5-3.8 GB before the allocator gave up).
"""

import json
import resource
import sys
import time

CAP_BYTES = 6 << 30


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))
    import torch  # imported before the baseline: both paths import it anyway

    from mail_policy_node.checkpoint_root import resolve_checkpoint
    from mail_policy_node.engine.engine import EngineConfig, InferenceEngine
    from mail_policy_node.model.checkpoint import CheckpointError, load_checkpoint

    torch.set_num_threads(1)
    mode = sys.argv[1]
    baseline = peak_mb()
    t0 = time.perf_counter()
    try:
        if mode == "load":
            load_checkpoint(sys.argv[2])
        else:
            InferenceEngine.from_checkpoint(resolve_checkpoint(sys.argv[2], sys.argv[3]), EngineConfig())
        outcome, reason = "loaded", ""
    except CheckpointError as e:
        outcome, reason = "refused", str(e)
    except BaseException as e:  # what the test must never see
        outcome, reason = "crashed", f"{type(e).__name__}: {str(e)[:300]}"
    seconds = time.perf_counter() - t0
    print(json.dumps(dict(outcome=outcome, reason=reason, seconds=seconds, peak_mb=peak_mb(), baseline_mb=baseline)))


if __name__ == "__main__":
    main()
