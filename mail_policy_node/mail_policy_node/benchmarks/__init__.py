"""Public benchmarks run with this project's policies, each in an environment of its own.

- `metaworld`: Meta-World v3 (`mail-il metaworld ...`, run from .venv-metaworld: `make metaworld-env`).
  Only `metaworld_env` imports metaworld and mujoco 3.3.0; the rest of the package never does.
"""
