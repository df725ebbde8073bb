"""ClockMapper: device (robot) clock -> host clock, for joint-state stamps the policy synchronises."""

import numpy as np
import pytest

from mail_policy_node.data.sync import ClockMapper


def _run(rate: float, jitter: float, n: int = 400, period: float = 0.01, seed: int = 0):
    """A device clock at ``rate`` x real time, read every ``period`` s with up to ``jitter`` s of
    transport delay. Returns mapped stamp - true sampling time, per sample (after a warm-up)."""
    rng = np.random.default_rng(seed)
    mapper = ClockMapper()
    errors = []
    for k in range(n):
        t_true = 1000.0 + k * period  # host time the state was sampled
        device = 5.0 + rate * (t_true - 1000.0)
        received = t_true + rng.uniform(0.0, jitter)
        errors.append(mapper.update(device, received) - t_true)
    return np.array(errors[20:])


def test_mapped_stamps_track_a_clock_at_real_rate_within_the_transport_jitter():
    err = _run(rate=1.0, jitter=0.003)
    assert np.all(err >= -1e-9) and np.max(err) < 0.003


@pytest.mark.parametrize("rate", [0.7, 0.87, 1.15])
def test_a_clock_at_another_rate_is_followed_closely(rate):
    # franky-sim's clock runs at 0.7-1.0x real time under load: stamps must stay close to the real
    # sampling time, or the policy waits for joint states that match its camera frames
    err = _run(rate=rate, jitter=0.002)
    assert np.max(np.abs(err)) < 0.02


def test_mapped_stamp_is_never_after_the_receive_time():
    mapper = ClockMapper()
    for device, host in [(1.0, 10.0), (1.01, 10.02), (1.02, 10.021), (1.5, 10.03)]:
        assert mapper.update(device, host) <= host + 1e-12


def test_no_samples_is_an_error():
    with pytest.raises(ValueError):
        ClockMapper().to_host(1.0)


def test_a_device_clock_that_goes_back_restarts_the_mapping():
    """A device reset (its clock starts again near 0): the mapped stamps stay at the host times the
    states were read, instead of falling back by the whole step until the old samples leave the window."""
    mapper = ClockMapper()
    host = 1000.0
    for k in range(20):
        mapper.update(500.0 + 0.01 * k, host + 0.01 * k + 0.001)
    stamps = [mapper.update(0.01 * k, host + 0.2 + 0.01 * k + 0.001) for k in range(10)]
    assert all(abs(s - (host + 0.2 + 0.01 * k)) < 0.002 for k, s in enumerate(stamps)), stamps
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert mapper.resets == 1
