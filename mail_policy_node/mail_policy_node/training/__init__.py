"""Training from rosbag2 demonstrations and closed-loop evaluation in simulation (ROS-free).

- `config`: the one YAML training config (data / policy / train sections, `key=value` overrides).
- `episodes`: bags -> time-aligned episodes, decoded frames cached on disk per bag and settings.
- `dataset`: split by episode, data fraction, normalisation statistics, window and episode batches.
- `trainer`: Adam (+ EMA for DDPM), validation, resumable safetensors + JSON checkpoints, summary.
- `evaluate`: seeded episodes through the inference engine in the simulated tasks, in parallel
  processes; success with a Wilson interval, latency, rollout pictures.

Command-line front ends: `mail-il train` (commands/train.py) and `mail-il eval` (commands/eval.py).
"""
