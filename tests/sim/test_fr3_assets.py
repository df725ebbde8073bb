"""The FR3 model can come from a copied folder (MAIL_FR3_ASSETS) instead of the installed franky_sim:
the scene built from it renders the same frames, and a folder without the model is refused clearly."""

import shutil

import numpy as np
import pytest

from mail_policy_node.sim import make_task
from mail_policy_node.sim.scene import franky_sim_assets


def test_a_copied_fr3_model_gives_the_same_frames(tmp_path, monkeypatch):
    installed = franky_sim_assets()
    copy = tmp_path / "fr3_assets"
    shutil.copytree(installed, copy, ignore=shutil.ignore_patterns("*.dae", "*.urdf"))
    env = make_task("reach", render=True, image_size=(64, 64))
    expected = env.reset(3)["images"]
    monkeypatch.setenv("MAIL_FR3_ASSETS", str(copy))
    assert franky_sim_assets() == copy
    env2 = make_task("reach", render=True, image_size=(64, 64))
    got = env2.reset(3)["images"]
    for cam in expected:
        np.testing.assert_array_equal(got[cam], expected[cam])


def test_a_folder_without_the_model_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MAIL_FR3_ASSETS", str(tmp_path))
    with pytest.raises(RuntimeError, match="fr3.xml"):
        franky_sim_assets()
