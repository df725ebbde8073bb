"""Keep only some CUDA architectures in mamba-ssm's or causal-conv1d's setup.py before building them.

Both setup.py files append a fixed list of ``-gencode arch=compute_NN,code=sm_NN`` pairs (nine
architectures with CUDA 13), which makes the kernels stage of docker/Dockerfile take hours. With the
build argument KERNEL_ARCHS (for example "90" for H100/H200, "80 86 90" for A100 + RTX 30xx + H100) the
Dockerfile runs this on each unpacked source release: every other pair becomes ``pass``, so the
conditional blocks around them stay valid Python. It refuses, instead of building something else,
when a wanted architecture is not in the file's list or when the file has no such pairs at all (a new
release changed its layout).

    python3 patch_kernel_archs.py path/to/setup.py "80 90"
"""

from __future__ import annotations

import re
import sys

# One `-gencode` flag and its value, two consecutive cc_flag.append(...) lines.
PAIR = re.compile(r'^(?P<indent>[ \t]*)cc_flag\.append\("-gencode"\)\n'
                  r'[ \t]*cc_flag\.append\("arch=compute_(?P<arch>\d+),code=sm_\d+"\)\n', re.MULTILINE)


def restrict(text: str, wanted: set[str]) -> str:
    """``text`` with only the gencode pairs of ``wanted`` architectures ("80", "90", ...)."""
    listed = {m.group("arch") for m in PAIR.finditer(text)}
    if not listed:
        raise ValueError("no cc_flag -gencode pairs found: this setup.py's layout is not the expected one")
    missing = wanted - listed
    if missing:
        raise ValueError(f"architectures {sorted(missing)} are not in this setup.py's list {sorted(listed, key=int)}")
    out = PAIR.sub(lambda m: m.group(0) if m.group("arch") in wanted else f"{m.group('indent')}pass\n", text)
    compile(out, "setup.py", "exec")  # still valid Python
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    path, archs = argv
    wanted = set(archs.replace(",", " ").replace(";", " ").split())
    if not wanted or not all(a.isdigit() for a in wanted):
        print(f"architectures must be numbers such as 80 or 90, got {archs!r}", file=sys.stderr)
        return 2
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        patched = restrict(text, wanted)
    except ValueError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    with open(path, "w", encoding="utf-8") as f:
        f.write(patched)
    print(f"{path}: CUDA architectures {' '.join(sorted(wanted, key=int))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
