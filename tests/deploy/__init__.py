"""Tests of the deployment files in docker/ (Dockerfiles, entrypoint, compose file): they need no
Docker engine and no ROS install."""

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def venv_tool(name: str) -> str:
    """A linter that env/requirements.txt installs into the interpreter's venv (else one on PATH)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make env` (env/requirements.txt pins it)")
    return found
