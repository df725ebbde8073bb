#!/usr/bin/env python3
"""Write docs/safety_limits.md, the table of every safety limit the controller declares, from the
declarations themselves (control/params.py ``safety_limits_markdown``). Run it after adding or changing
a ``safety_limit(...)`` field; tests/control/test_safety_limits.py fails while the file is stale.

    python scripts/safety_limits_doc.py           # write the file
    python scripts/safety_limits_doc.py --check   # exit 1 if it is stale, write nothing
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mail_policy_node"))

from mail_policy_node.control.params import safety_limits_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "safety_limits.md"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the file is stale; write nothing")
    args = p.parse_args(argv)
    text = safety_limits_markdown()
    current = DOC.read_text() if DOC.exists() else ""
    if args.check:
        if current != text:
            print(f"{DOC} is stale: run python scripts/safety_limits_doc.py", file=sys.stderr)
            return 1
        return 0
    if current != text:
        DOC.write_text(text)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
