"""nodes.shut_down: a node's last step, shutting rclpy down, where rclpy's signal handler may be doing the same
from its own thread. `make test` once saw the controller, stopped by SIGINT after a clean run, exit 1 with
"rcl_shutdown already called" from rclpy's try_shutdown: the handler's shutdown landed between try_shutdown's
check and its act. That interleaving cannot be timed from a test, so these tests inject it (a fault injection,
the one fake here): the rclpy context's handle shuts itself down the moment try_shutdown asks whether it is up.
"""

import pytest

pytestmark = pytest.mark.ros


class _RacedHandle:
    """The context's C handle, with the signal handler's shutdown landing inside the first ok() check."""

    def __init__(self, real, shutdown_fails: bool = False):
        self.real, self.raced, self.shutdown_fails = real, False, shutdown_fails

    def __enter__(self):
        return self.real.__enter__()

    def __exit__(self, *exc):
        return self.real.__exit__(*exc)

    def ok(self):
        was = self.real.ok()
        if not self.raced and not self.shutdown_fails:
            self.raced = True
            self.real.shutdown()
        return was

    def shutdown(self):
        if self.shutdown_fails:  # a shutdown that fails and leaves the context up
            raise RuntimeError("injected: the middleware refused to shut down")
        self.real.shutdown()

    def __getattr__(self, name):
        return getattr(self.real, name)


def _raced_context(**kw):
    from rclpy.context import Context

    ctx = Context()
    ctx.init(initialize_logging=False)
    real = ctx._Context__context
    ctx._Context__context = _RacedHandle(real, **kw)
    return ctx, real


def test_rclpy_try_shutdown_raises_when_the_signal_handler_wins_the_race():
    """The fault as rclpy shows it: what a node's exit did before shut_down."""
    ctx, real = _raced_context()
    with pytest.raises(RuntimeError, match="already called"):
        ctx.try_shutdown()
    assert not real.ok()


def test_shut_down_takes_a_context_already_down_as_done():
    import rclpy

    from mail_policy_node.nodes import shut_down

    ctx, real = _raced_context()
    shut_down(ctx)  # no error: the context is down, as asked
    assert not real.ok() and not rclpy.ok(context=ctx)


def test_shut_down_raises_an_error_that_leaves_the_context_up():
    from mail_policy_node.nodes import shut_down

    ctx, real = _raced_context(shutdown_fails=True)
    with pytest.raises(RuntimeError, match="refused to shut down"):
        shut_down(ctx)
    assert real.ok()
    real.shutdown()
