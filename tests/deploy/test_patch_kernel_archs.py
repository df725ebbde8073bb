"""docker/patch_kernel_archs.py, which narrows the CUDA architectures of the Mamba kernels' setup.py
for the GPU image, on a setup.py laid out like the upstream ones (and on the real source releases
when shared/gpu/build holds them)."""

import subprocess
import sys
import tarfile
import textwrap

import pytest

from tests.deploy import DOCKER, ROOT
from tests.scripts import load_script

patch = load_script(DOCKER / "patch_kernel_archs.py")
PAIR, restrict = patch.PAIR, patch.restrict

SETUP = textwrap.dedent('''\
    cc_flag = []
    if not SKIP:
        cc_flag.append("-gencode")
        cc_flag.append("arch=compute_75,code=sm_75")
        cc_flag.append("-gencode")
        cc_flag.append("arch=compute_80,code=sm_80")
        if version >= 11.8:
            cc_flag.append("-gencode")
            cc_flag.append("arch=compute_90,code=sm_90")
        if version >= 12.8:
            cc_flag.append("-gencode")
            cc_flag.append("arch=compute_120,code=sm_120")
    ''')


def archs(text: str) -> list[str]:
    return [m.group("arch") for m in PAIR.finditer(text)]


def test_keeps_only_the_wanted_architectures():
    out = restrict(SETUP, {"90"})
    assert archs(out) == ["90"]
    scope = {"SKIP": False, "version": 13.0}
    exec(out, scope)  # the emptied `if` blocks are still valid
    assert scope["cc_flag"] == ["-gencode", "arch=compute_90,code=sm_90"]
    assert archs(restrict(SETUP, {"80", "120"})) == ["80", "120"]


def test_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match=r"\['86'\] are not in"):
        restrict(SETUP, {"86"})
    with pytest.raises(ValueError, match="layout"):
        restrict("cc_flag = ['-arch=sm_90']\n", {"90"})


def test_command_line(tmp_path):
    setup = tmp_path / "setup.py"
    setup.write_text(SETUP)
    script = str(DOCKER / "patch_kernel_archs.py")
    ok = subprocess.run([sys.executable, script, str(setup), "80 90"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and archs(setup.read_text()) == ["80", "90"]
    bad = subprocess.run([sys.executable, script, str(setup), "sm_90"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "numbers" in bad.stderr


@pytest.mark.parametrize("sdist", ["mamba_ssm-2.3.2.post1.tar.gz", "causal_conv1d-1.7.0.tar.gz"])
def test_upstream_source_releases(tmp_path, sdist):
    """The pinned releases themselves (env/requirements-gpu.txt), where the GPU notes keep them."""
    path = ROOT.parent / "shared" / "gpu" / "build" / sdist
    if not path.exists():
        pytest.skip(f"{path} is not here")
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.count("/") == 1 and m.name.endswith("/setup.py"))
        text = tar.extractfile(member).read().decode()
    assert len(archs(text)) >= 5
    assert archs(restrict(text, {"90"})) == ["90"]
