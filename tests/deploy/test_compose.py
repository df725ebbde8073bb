"""docker/compose.yaml (two machines) and docker/dds: checked as data, since no Docker engine runs
here. Each node service must start a node of the real_robot graph through the entrypoint, with
parameter values of the right type and a restart policy matching the graph's respawn rule."""

import re
import shlex
import subprocess
import xml.etree.ElementTree as ET

import pytest
import yaml

from mail_bringup.graph import CONFIG_DIR, profile
import numpy as np

from mail_policy_node.control.limits import FR3_HW_DQ_MAX
from mail_policy_node.control.params import controller_setup
from mail_policy_node.spec import (TOPIC_ACTION_COMMAND, TOPIC_EPISODE, TOPIC_JOINT_STATES, camera_image_topic)
from tests.deploy import DOCKER, ROOT

COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
REAL = profile("real_robot")
REAL_PARAMS = yaml.safe_load((CONFIG_DIR / "real_robot.yaml").read_text())
VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def example_env() -> dict[str, str]:
    out = {}
    for line in (DOCKER / "example.env").read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} with the example settings."""
    return VARIABLE.sub(lambda m: env[m.group(1)] if m.group(1) in env else m.group(2), text)


def node_services() -> dict[str, dict]:
    return {name: s for name, s in SERVICES.items() if s.get("command", [None])[0] == "node"}


def test_one_service_per_node_of_the_real_robot_graph():
    by_node = {s["command"][1]: name for name, s in node_services().items()}
    assert sorted(by_node) == sorted(n.name for n in REAL.nodes)
    for spec in REAL.nodes:
        service = SERVICES[by_node[spec.name]]
        host = "rt" if spec.name == "franka_controller" else "gpu"
        assert service["profiles"] == [host], spec.name
        assert service["restart"] == ("on-failure" if spec.respawn else "no"), spec.name


def test_services_share_one_ros_graph():
    for name, service in SERVICES.items():
        env = service["environment"]
        assert service["network_mode"] == "host" and service["ipc"] == "host", name
        assert env["MAIL_PROFILE"] == "real_robot" and env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"
        assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET", "ROS_STATIC_PEERS is ignored outside SUBNET"
        assert "${GPU_HOST_IP" in env["ROS_STATIC_PEERS"] and "${RT_HOST_IP" in env["ROS_STATIC_PEERS"]
        mounted = dict(v.split(":")[:2] for v in service["volumes"])
        assert mounted["./dds"] == "/opt/mail/docker/dds"
        assert mounted["../mail_bringup/config"] == "/opt/mail/mail_bringup/config"  # MAIL_PARAMS_DIR
        assert (DOCKER / "../mail_bringup/config").resolve() == CONFIG_DIR
        profile_file = env["FASTRTPS_DEFAULT_PROFILES_FILE"]
        assert profile_file.startswith("/opt/mail/docker/dds/")
        assert (DOCKER / "dds" / profile_file.rsplit("/", 1)[1]).is_file()
        assert service["stop_signal"] == "SIGINT", name


def test_every_variable_has_an_example():
    used = set(VARIABLE.findall((DOCKER / "compose.yaml").read_text()))
    assert {name for name, _ in used} <= set(example_env())


@pytest.mark.parametrize("service", sorted(node_services()))
def test_node_commands_through_the_entrypoint(tmp_path, service):
    env = example_env()
    args = [interpolate(a, env) for a in SERVICES[service]["command"]]
    out = subprocess.run(["bash", str(DOCKER / "entrypoint.sh"), *args], capture_output=True, text=True,
                         timeout=30, env={"PATH": "/usr/bin:/bin", "MAIL_ENTRYPOINT_PRINT": "1",
                                          "MAIL_ROS_SETUP": str(tmp_path / "none"),
                                          "MAIL_PARAMS_DIR": str(CONFIG_DIR), "MAIL_PROFILE": "real_robot"})
    assert out.returncode == 0, out.stderr
    cmd = shlex.split(out.stdout)
    spec = REAL.node(args[1])
    assert cmd[:3] == ["python3", "-m", spec.module]
    # -p values reach the node as YAML scalars: each must have the type of the parameter's YAML value
    section = REAL_PARAMS[spec.name]["ros__parameters"]
    overrides = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-p"]
    assert overrides
    for item in overrides:
        key, _, value = item.partition(":=")
        assert key in section, f"{service}: {key} is not a parameter of {spec.name}"
        assert type(yaml.safe_load(value)) is type(section[key]), f"{service}: {item} changes the type"


def test_the_controller_dial_defaults_to_the_first_runbook_stage():
    """The compose file's dynamics dial starts at the runbook's first stage, builds a valid controller
    configuration with the rest of real_robot.yaml, and example.env says the same."""
    command = " ".join(SERVICES["franka_controller"]["command"])
    defaults = {m.group(1): m.group(2) for m in re.finditer(r"\$\{(\w+):-([^}]*)\}", command)}
    assert float(defaults["DYNAMICS_FACTOR"]) == 0.1 and defaults["DRY_RUN"] == "true"
    p = REAL_PARAMS["franka_controller"]["ros__parameters"]
    setup = controller_setup({**p, "relative_dynamics_factor": float(defaults["DYNAMICS_FACTOR"])})
    assert np.all(setup.budget.caps.dq_max <= FR3_HW_DQ_MAX * 0.1 + 1e-12)
    assert example_env()["DYNAMICS_FACTOR"] == defaults["DYNAMICS_FACTOR"]


def test_recorder_records_what_training_reads():
    topics = [a for a in SERVICES["record"]["command"] if a.startswith("/")]
    cameras = [n.parameters["camera_name"] for n in REAL.nodes if n.executable == "camera_node"]
    for topic in [camera_image_topic(c) for c in cameras] + [TOPIC_JOINT_STATES, TOPIC_ACTION_COMMAND, TOPIC_EPISODE]:
        assert topic in topics


def test_dds_profile_matches_the_projects():
    ns = {"f": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    ours = ET.parse(DOCKER / "dds" / "fastdds_two_hosts.xml").getroot()
    project = ET.parse(ROOT / "mail_policy_node" / "mail_policy_node" / "config" / "fastdds_shm.xml").getroot()
    kinds = [t.findtext("f:type", namespaces=ns) for t in ours.iterfind(".//f:transport_descriptor", ns)]
    assert kinds == ["SHM", "UDPv4"]
    segment = ".//f:transport_descriptor/f:segment_size"
    assert ours.findtext(segment, namespaces=ns) == project.findtext(segment, namespaces=ns)
    participant = ours.find("f:participant", ns)
    assert participant.get("is_default_profile") == "true"
    assert participant.findtext("f:rtps/f:useBuiltinTransports", namespaces=ns) == "false"
