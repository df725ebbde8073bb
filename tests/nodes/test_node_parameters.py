"""Nodes declare their parameter tables with descriptions, ranges and read-only flags: read back from a
real node process through rcl_interfaces' DescribeParameters / GetParameters services (what
`ros2 param describe` and `ros2 param get` ask), and a value outside its range or choices stops the node
at start with exit code 2 and one line naming the parameter."""

import pytest

from tests.rosutil import node_process, private_domain, probe, stop_process, wait_for

pytestmark = pytest.mark.ros


def call(p, srv_type, service: str, request, timeout: float = 30.0):
    client = p.node.create_client(srv_type, service)
    assert client.wait_for_service(timeout_sec=timeout), f"no {service}"
    future = client.call_async(request)
    wait_for(future.done, timeout, what=f"{service} answer")
    return future.result()


def value_of(msg):
    """A ParameterValue message as a Python value."""
    from rclpy.parameter import parameter_value_to_python

    value = parameter_value_to_python(msg)
    return list(value) if isinstance(value, (list, tuple)) or hasattr(value, "tolist") else value


def tables():
    from mail_policy_node.data.cameras import CAMERA_PARAMETERS
    from mail_policy_node.runtime import POLICY_PARAMETERS

    return {"policy_node": POLICY_PARAMETERS, "camera_node": CAMERA_PARAMETERS}


# the policy without a checkpoint idles; a sim camera waits for a scene: both stay up without hardware
NODES = [("policy_node", "policy_node", {}),
         ("camera_node", "camera_agentview", {"camera_name": "agentview", "source": "sim", "width": 96})]


@pytest.mark.parametrize("module, name, params", NODES, ids=[n[0] for n in NODES])
def test_a_running_node_describes_every_parameter_of_its_table(module, name, params):
    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import DescribeParameters, GetParameters, ListParameters

    table = tables()[module]
    names = [spec.name for spec in table]
    with private_domain(), probe() as p:
        proc = node_process(f"mail_policy_node.nodes.{module}", name, params)
        try:
            listed = call(p, ListParameters, f"/{name}/list_parameters", ListParameters.Request()).result.names
            described = call(p, DescribeParameters, f"/{name}/describe_parameters",
                             DescribeParameters.Request(names=names)).descriptors
            values = call(p, GetParameters, f"/{name}/get_parameters", GetParameters.Request(names=names)).values
        finally:
            out = stop_process(proc)
    assert set(names) <= set(listed), (sorted(set(names) - set(listed)), out[-2000:])
    expected = {spec.name: spec.default for spec in table} | params
    for spec, d, v in zip(table, described, values):
        assert d.name == spec.name and d.description == spec.full_description(), d
        assert d.read_only == spec.read_only, d
        assert value_of(v) == expected[spec.name], (spec.name, value_of(v))
        if spec.choices:
            assert d.additional_constraints == spec.allowed(), d
        if spec.low is None:
            assert not d.floating_point_range and not d.integer_range, d
        elif d.type == ParameterType.PARAMETER_INTEGER:
            (r,) = d.integer_range
            assert (r.from_value, r.to_value, r.step) == (spec.low, spec.high, 1), d
        else:
            (r,) = d.floating_point_range
            assert (r.from_value, r.to_value, r.step) == (spec.low, spec.high, 0.0), d


def test_policy_descriptors_say_what_ros2_param_describe_must_explain():
    """A few by hand: the hot-swapped checkpoint is writable, everything else read-only; rate_hz has its
    range; history_mode lists its choices; a read-only parameter refuses `ros2 param set`."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import DescribeParameters, SetParameters

    with private_domain(), probe() as p:
        proc = node_process("mail_policy_node.nodes.policy_node", "policy_node", {})
        try:
            checkpoint, rate, history = call(p, DescribeParameters, "/policy_node/describe_parameters",
                                             DescribeParameters.Request(names=["checkpoint", "rate_hz",
                                                                               "history_mode"])).descriptors
            (set_rate,) = call(p, SetParameters, "/policy_node/set_parameters", SetParameters.Request(parameters=[
                Parameter(name="rate_hz", value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                                               double_value=5.0))])).results
        finally:
            out = stop_process(proc)
    assert not checkpoint.read_only and "swaps it in at the next chunk boundary" in checkpoint.description, out[-2000:]
    assert rate.read_only and "[Hz]" in rate.description
    assert (rate.floating_point_range[0].from_value, rate.floating_point_range[0].to_value) == (0.0, 200.0)
    assert history.read_only and "one of: '', window, stream" in history.description
    assert not set_rate.successful and "read-only" in set_rate.reason


@pytest.mark.parametrize("module, params, message", [
    ("camera_node", {"fps": 0}, "fps must be in [1, 90], got 0"),
    ("camera_node", {"source": "usb"}, "source must be one of: realsense, sim; got 'usb'"),
    ("policy_node", {"rate_hz": -1.0}, "rate_hz must be in [0.0, 200.0], got -1.0"),
    ("policy_node", {"history_mode": "windowed"}, "history_mode must be one of: '', window, stream; got 'windowed'"),
])
def test_a_value_outside_its_range_or_choices_stops_the_node_at_start(module, params, message):
    with private_domain():
        proc = node_process(f"mail_policy_node.nodes.{module}", module, params)
        try:
            rc = proc.wait(timeout=60)
        finally:
            out = stop_process(proc)
    assert rc == 2, out[-2000:]
    assert "cannot start" in out and message in out and "Traceback" not in out, out[-2000:]
