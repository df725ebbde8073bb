"""Hostile checkpoints are refused before anything is allocated: a CheckpointError with a one-line reason,
in well under a second, at the memory of loading the shipped checkpoint; never a traceback.

Real files throughout: each hostile checkpoint is the shipped one (mail_bringup/checkpoints/
reach_dma_small) with its config.json edited. Time and peak memory are measured in a child process per
checkpoint (tests/security/load_probe.py), through the policy node's own path (resolve_checkpoint +
InferenceEngine.from_checkpoint), against a child that loads the shipped checkpoint.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mail_policy_node.checkpoint_limits import (MAX_JSON_DEPTH, MAX_PARAMS, CheckpointError, estimate,
                                                validate_policy_dict)
from mail_policy_node.checkpoint_root import CheckpointRefused, resolve_checkpoint
from mail_policy_node.engine.engine import EngineConfig, InferenceEngine
from mail_policy_node.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_checkpoint, read_config

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "mail_bringup" / "checkpoints" / "reach_dma_small"
PROBE = Path(__file__).with_name("load_probe.py")
MEMORY_SLACK_MB = 100
REFUSE_WITHIN_S = 1.0


def shipped_config() -> dict:
    return json.loads((SHIPPED / CONFIG_NAME).read_text())


def policy_edit(**sections):
    """An edit of config["policy"]: section -> {field: value} (or a value for "history")."""
    def edit(c):
        for section, fields in sections.items():
            if isinstance(fields, dict):
                c["policy"][section].update(fields)
            else:
                c["policy"][section] = fields
    return edit


def cameras(h, w):
    return policy_edit(spec={"cameras": [{"name": "agentview", "height": h, "width": w},
                                         {"name": "wrist", "height": h, "width": w}]},
                       encoder={"image_size": [h, w]})


def nested_metadata(c):
    c["metadata"] = "@DEEP@"


def raw_deep(text: str) -> str:
    return text.replace('"@DEEP@"', "[" * 100_000 + "]" * 100_000)


def raw_huge_int(text: str) -> str:
    return text.replace('"n_layers": 4', '"n_layers": ' + "9" * 5000)


def raw_nan(text: str) -> str:
    return text.replace('"dt": 0.1', '"dt": NaN')


def raw_inf(text: str) -> str:
    return text.replace('"dropout": 0.1', '"dropout": 1e999')


def raw_duplicate(text: str) -> str:
    return text.replace('"n_layers": 4', '"n_layers": 4, "n_layers": 400000')


# id -> (edit of the config dict, edit of its text, what the refusal names)
HOSTILE = {
    "million_layers": (policy_edit(backbone={"n_layers": 1_000_000}), None, r"n_layers = 1000000 is outside \[1, 64\]"),
    "width_4096_x_64_layers": (policy_edit(backbone={"d_model": 4096, "n_layers": 64}, encoder={"d_model": 4096}),
                               None, r"d_model = 4096 is outside \[1, 2048\]"),
    "over_budget_within_bounds": (policy_edit(backbone={"d_model": 2048, "n_layers": 64, "expand": 4},
                                              encoder={"d_model": 2048}), None, "over the budget"),
    "memory_over_budget": (policy_edit(backbone={"d_model": 2048, "n_layers": 1, "expand": 4, "d_state": 256,
                                                 "obs_steps": 64, "action_horizon": 64},
                                       spec={"obs_horizon": 64, "action_horizon": 64}, encoder={"d_model": 2048}),
                           None, r"needing ~\d[\d,]* MiB .* over the budget of 2,048 MiB"),
    "deeply_nested_json": (nested_metadata, raw_deep, f"nests deeper than {MAX_JSON_DEPTH}"),
    "zero_d_model": (policy_edit(backbone={"d_model": 0}, encoder={"d_model": 0}), None, r"d_model = 0 is outside"),
    "negative_layers": (policy_edit(backbone={"n_layers": -1}), None, r"n_layers = -1 is outside"),
    "negative_keypoints": (policy_edit(encoder={"keypoints": -5}), None, r"keypoints = -5 is outside"),
    "zero_action_horizon": (policy_edit(spec={"action_horizon": 0}, backbone={"action_horizon": 0}), None,
                            r"action_horizon = 0 is outside"),
    "negative_base_width": (policy_edit(encoder={"base_width": -16}), None, r"base_width = -16 is outside"),
    "zero_diffusion_steps": (policy_edit(diffusion={"steps": 0}), None, r"steps = 0 is outside"),
    "zero_image_size": (cameras(0, 0), None, r"(height|image_size\[0\]) = 0 is outside \[32, 1024\]"),
    "absurd_image_size": (cameras(100_000, 100_000), None,
                          r"(height|image_size\[0\]) = 100000 is outside \[32, 1024\]"),
    "huge_base_width": (policy_edit(encoder={"base_width": 4096}), None, r"base_width = 4096 is outside \[16, 128\]"),
    "billion_diffusion_steps": (policy_edit(diffusion={"steps": 10**9}), None, r"steps = 1000000000 is outside"),
    "billion_keypoints": (policy_edit(encoder={"keypoints": 10**9}), None, r"keypoints = 1000000000 is outside"),
    "huge_goal_embedding": (policy_edit(spec={"goal_embedding_dim": 10**9}), None, "goal_embedding_dim = 1000000000"),
    "10k_action_names": (policy_edit(spec={"action_names": [f"a{i}" for i in range(10_000)]}), None,
                         r"action_names has 10000 entries, outside \[1, 64\]"),
    "long_camera_name": (policy_edit(spec={"cameras": [{"name": "c" * 5000, "height": 64, "width": 64}]},
                                     encoder={"cameras": ["c" * 5000]}), None, "must be a name of 1..64 characters"),
    "5000_digit_integer": (None, raw_huge_int, "not usable JSON"),
    "nan": (None, raw_nan, "non-finite number NaN"),
    "infinity": (None, raw_inf, "non-finite number"),
    "duplicate_key": (None, raw_duplicate, "duplicate key 'n_layers'"),
    "string_for_integer": (policy_edit(backbone={"n_layers": "4"}), None, "n_layers must be an integer, got a string"),
    "float_for_integer": (policy_edit(backbone={"d_model": 64.0}), None, "d_model must be an integer, got a number"),
    "integer_for_boolean": (policy_edit(spec={"use_joint_state": 1}), None, "use_joint_state must be true or false"),
    "section_not_object": (policy_edit(backbone=[1, 2, 3]), None, "policy.backbone must be an object, got a list"),
    "d_conv_1": (policy_edit(backbone={"d_conv": 1}), None, r"d_conv = 1 is outside \[2, 4\]"),
}
# the cases of the issue, measured in a child process each (the others are checked in-process)
MEASURED = ["million_layers", "width_4096_x_64_layers", "over_budget_within_bounds", "memory_over_budget",
            "deeply_nested_json", "negative_layers", "zero_image_size", "absurd_image_size", "5000_character_name"]


def make_hostile(folder: Path, case: str) -> Path:
    edit, raw, _ = HOSTILE[case]
    folder.mkdir(parents=True)
    shutil.copyfile(SHIPPED / WEIGHTS_NAME, folder / WEIGHTS_NAME)
    config = shipped_config()
    if edit:
        edit(config)
    text = json.dumps(config, indent=1)
    (folder / CONFIG_NAME).write_text(raw(text) if raw else text)
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("checkpoints")
    shutil.copytree(SHIPPED, r / "shipped")
    for case in HOSTILE:
        make_hostile(r / case, case)
    return r


# ---- every hostile config: a CheckpointError naming the field, quickly, on every path ----------------------
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_config_is_refused_with_its_reason(root, case):
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=HOSTILE[case][2]) as info:
        load_checkpoint(root / case)
    assert time.perf_counter() - t0 < REFUSE_WITHIN_S
    assert "\n" not in str(info.value) and len(str(info.value)) <= 600
    with pytest.raises(CheckpointError, match=HOSTILE[case][2]):  # the node's path: resolve, then load
        InferenceEngine.from_checkpoint(resolve_checkpoint(root, case), EngineConfig())


def test_5000_character_names_are_refused_with_a_reason(root):
    for name in ("a" * 5000, "a" * 300, "shipped/" + "b" * 4090, "ship\0ped"):
        with pytest.raises(CheckpointRefused, match="characters long|folder name of|NUL") as info:
            resolve_checkpoint(root, name)
        assert isinstance(info.value, CheckpointError) and isinstance(info.value, ValueError)
        assert len(str(info.value)) < 300  # the name is not echoed whole
        with pytest.raises(CheckpointError, match="characters long|folder name of|NUL"):
            load_checkpoint(str(root) + "/" + name)


def test_filesystem_errors_are_checkpoint_errors(root, tmp_path):
    os.symlink(tmp_path / "loop_b", root / "loop_a")
    os.symlink(root / "loop_a", tmp_path / "loop_b")
    with pytest.raises(CheckpointRefused, match="cannot be resolved|cannot be read"):
        resolve_checkpoint(root, "loop_a")
    with pytest.raises(CheckpointError):
        load_checkpoint(root / "loop_a")
    unreadable = root / "no_read"
    shutil.copytree(SHIPPED, unreadable)
    (unreadable / CONFIG_NAME).chmod(0)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(CheckpointError, match="cannot be read"):
            load_checkpoint(unreadable)


def test_json_bounds_before_parsing(tmp_path):
    folder = make_hostile(tmp_path / "big", "million_layers")
    config = shipped_config()
    config["metadata"]["notes"] = "x" * (2 << 20)  # over the 1 MiB bound of config.json
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="over the bound of 1048576"):
        load_checkpoint(folder)
    config["metadata"]["notes"] = "x" * 70_000  # a string over MAX_STRING_CHARS
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="a string of 70000 characters"):
        load_checkpoint(folder)
    # texts that made a string-skipping scan quadratic: refused at once, as invalid JSON
    for text in ('"' + '\\"' * 400_000, '"' * 1_000_000, '["' + "[" * 500_000):
        (folder / CONFIG_NAME).write_text(text)
        t0 = time.perf_counter()
        with pytest.raises(CheckpointError, match="not valid JSON"):
            load_checkpoint(folder)
        assert time.perf_counter() - t0 < REFUSE_WITHIN_S
    # brackets inside strings do not count as nesting; a real (shallow) config loads
    config = shipped_config()
    config["metadata"]["notes"] = "[" * 10_000
    data = json.dumps(config)
    (folder / CONFIG_NAME).write_text(data)
    shutil.copyfile(SHIPPED / WEIGHTS_NAME, folder / WEIGHTS_NAME)
    assert load_checkpoint(folder).metadata["notes"] == "[" * 10_000


# ---- the weights' header is checked against the config before the weights are read ------------------------
def test_weights_header_is_checked_before_reading_weights(tmp_path):
    folder = tmp_path / "c"
    shutil.copytree(SHIPPED, folder)
    assert read_config(folder)[0].backbone.n_layers == 4
    config = shipped_config()
    config["policy"]["backbone"]["n_layers"] = 5  # in bounds and budget; the weights have 4 layers
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"missing tensors \['backbone.stack.layers.4"):
        load_checkpoint(folder)
    # a header whose byte spans disagree with its shapes
    data = bytearray((SHIPPED / WEIGHTS_NAME).read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [10**6] + header[name]["shape"][1:]
    text = json.dumps(header).encode()
    (folder / WEIGHTS_NAME).write_bytes(len(text).to_bytes(8, "little") + text + bytes(data[8 + n:]))
    (folder / CONFIG_NAME).write_text((SHIPPED / CONFIG_NAME).read_text())
    with pytest.raises(CheckpointError, match="spans .* bytes, its shape"):
        load_checkpoint(folder)
    # a deeply nested safetensors header
    deep = b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    (folder / WEIGHTS_NAME).write_bytes(len(deep).to_bytes(8, "little") + deep)
    with pytest.raises(CheckpointError, match="corrupt header: header nests deeper"):
        load_checkpoint(folder)


# ---- the budget: estimate == the built model, exactly; the presets well inside -----------------------------
def test_default_configs_are_within_the_bounds():
    from mail_policy_node.model.policy import PolicyConfig
    from mail_policy_node.spec import FeatureSpec

    validate_policy_dict(PolicyConfig.make(FeatureSpec()).to_dict())
    validate_policy_dict(shipped_config()["policy"])


def test_estimate_is_the_built_models_parameter_count():
    """Every preset (with the paper's encoder and with the engine's other options), exact."""
    import torch

    from mail_policy_node.model.checkpoint import expected_tensors
    from mail_policy_node.model.policy import MailPolicy, PolicyConfig
    from mail_policy_node.model.presets import preset_names
    from mail_policy_node.spec import CameraSpec, FeatureSpec

    specs = [FeatureSpec(), FeatureSpec(cameras=(CameraSpec("a", 64, 96),), use_joint_state=True, goal_embedding_dim=16,
                                        obs_horizon=2, action_horizon=7)]
    largest = {}  # variant -> its largest policy here
    for spec in specs:
        for name in preset_names():
            for encoder in ({}, dict(base_width=16, keypoints=8, camera_features=48, d_model=64)):
                cfg = PolicyConfig.make(spec, name, encoder=encoder)
                with torch.device("meta"):
                    model = MailPolicy(cfg)
                params, nbytes = estimate(cfg)
                assert params == sum(p.numel() for p in model.parameters()), (name, encoder)
                assert sum(map(lambda s: int(torch.Size(s).numel()), expected_tensors(cfg).values())) == \
                    params + 4 * spec.action_dim + 2 * spec.state_dim
                assert nbytes > 4 * params
                largest[cfg.backbone.variant] = max(largest.get(cfg.backbone.variant, 0), params)
    assert max(v for k, v in largest.items() if k != "dp_unet") * 8 < MAX_PARAMS  # far above MaIL's (paper: ~25 M)
    assert largest["dp_unet"] * 2 < MAX_PARAMS  # and above Diffusion Policy's UNet (~95 M with the paper encoder)
    shipped = load_checkpoint(SHIPPED)
    assert estimate(shipped.cfg)[0] == sum(p.numel() for p in shipped.parameters())


# ---- time and peak memory, a child process per checkpoint --------------------------------------------------
def probe(*args) -> dict:
    out = subprocess.run([sys.executable, str(PROBE), *map(str, args)], capture_output=True, text=True, timeout=120,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def shipped_load():
    result = probe("load", SHIPPED)
    assert result["outcome"] == "loaded", result
    return result


@pytest.mark.parametrize("case", MEASURED)
def test_refused_within_a_second_at_the_memory_of_the_shipped_load(root, shipped_load, case):
    name = "a" * 5000 if case == "5000_character_name" else case
    result = probe("node", root, name)
    print(f"{case}: {result['outcome']} in {result['seconds'] * 1e3:.1f} ms, peak {result['peak_mb']:.0f} MB "
          f"(shipped load: {shipped_load['seconds'] * 1e3:.0f} ms, peak {shipped_load['peak_mb']:.0f} MB)")
    assert result["outcome"] == "refused", result
    assert result["seconds"] < REFUSE_WITHIN_S, result
    assert result["peak_mb"] <= shipped_load["peak_mb"] + MEMORY_SLACK_MB, (result, shipped_load)


# ---- the commands: one line, non-zero, no traceback ---------------------------------------------------------
def mail_il(*args, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "mail_policy_node.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=env)


def assert_one_line_refusal(out: subprocess.CompletedProcess, command: str, reason: str):
    assert out.returncode != 0
    assert "Traceback" not in out.stderr + out.stdout
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"mail-il {command}: checkpoint refused: "), lines[0]
    assert reason in lines[0], lines[0]


@pytest.mark.parametrize("case", ["million_layers", "deeply_nested_json", "5000_character_name"])
def test_commands_print_one_line_without_traceback(root, tmp_path, case):
    ckpt = root / ("a" * 5000 if case == "5000_character_name" else case)
    reason = {"million_layers": "n_layers = 1000000 is outside", "deeply_nested_json": "nests deeper",
              "5000_character_name": "characters long"}[case]
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    assert_one_line_refusal(mail_il("replay", bag, "--checkpoint", ckpt, "--out", tmp_path / "r", cwd=tmp_path),
                            "replay", reason)
    assert_one_line_refusal(mail_il("eval", "--checkpoint", ckpt, "--task", "reach", "--episodes", "1",
                                    "--no-progress", cwd=tmp_path), "eval", reason)
    assert_one_line_refusal(mail_il("export", ckpt, tmp_path / "exported", cwd=tmp_path), "export", reason)
    assert not (tmp_path / "exported").exists()


def test_train_resume_from_a_hostile_state_prints_one_line(root, tmp_path):
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    config = tmp_path / "train.yaml"
    config.write_text(f"data: {{bags: [{bag}]}}\nout: {tmp_path / 'out'}\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / "train_state.json").write_text('{"config": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert_one_line_refusal(mail_il("train", config, "--resume", state, "--no-progress", cwd=tmp_path), "train",
                            "nests deeper")
    (state / "train_state.json").write_text(json.dumps({"config": {"data": 1}}))
    assert_one_line_refusal(mail_il("train", config, "--resume", state, "--no-progress", cwd=tmp_path), "train",
                            "lacks config")
    long = tmp_path / ("s" * 5000)
    assert_one_line_refusal(mail_il("train", config, "--resume", long, "--no-progress", cwd=tmp_path), "train",
                            "characters long")


def test_estimate_does_not_depend_on_building(root):
    """The budget refusal comes from arithmetic: a config of 6.6 G parameters is estimated, not built."""
    from mail_policy_node.model.policy import PolicyConfig

    config = shipped_config()
    c = copy.deepcopy(config["policy"])
    c["backbone"].update(d_model=4096, n_layers=64)
    c["encoder"].update(d_model=4096)
    t0 = time.perf_counter()
    params, nbytes = estimate(PolicyConfig.from_dict(c))
    assert time.perf_counter() - t0 < 0.01
    assert params > 6e9 and nbytes > 4 * params
