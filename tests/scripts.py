"""The repository's scripts (not packages) imported as modules by their tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: str | Path) -> ModuleType:
    """The script at ``path`` (relative to the repository root) as a module, its folder importable while it
    loads (the GPU scripts import their neighbours: train_suite, suite_table)."""
    path = ROOT / path
    folder = str(path.parent)
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(folder)
