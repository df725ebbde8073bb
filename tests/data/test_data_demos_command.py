"""`mail-il demos`: one bag per expert demo, the success check and the preview strip."""

import json

import cv2

from mail_policy_node.commands import demos
from mail_policy_node.data.bags import load_demo


def test_demos_writes_one_bag_per_demo(tmp_path):
    assert demos.main(["--task", "reach", "--episodes", "2", "--seed", "5", "--out", str(tmp_path)]) == 0
    bags = sorted((tmp_path / "reach").iterdir())
    assert [b.name for b in bags] == ["ep0000_seed5", "ep0001_seed6"]
    assert all((b / "metadata.yaml").is_file() for b in bags)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["tasks"]["reach"]["success"] == 2 and summary["demos_per_minute"] > 0
    demo = load_demo(bags[1])
    assert demo.events[0]["seed"] == 6 and demo.events[0]["episode"] == 1 and demo.success


def test_demos_check_and_preview(tmp_path, capsys):
    assert demos.main(["--task", "memory", "--check", "2"]) == 0
    assert "memory" in capsys.readouterr().out
    assert demos.main(["--task", "reach", "--preview", "--preview-dir", str(tmp_path)]) == 0
    strip = cv2.imread(str(tmp_path / "sim_reach.png"))
    assert strip.shape == (256, 6 * 128, 3)
