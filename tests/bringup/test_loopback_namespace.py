"""scripts/run_tests.sh runs the tests in a loopback-only network namespace (MAIL_NETNS=loopback): only
`lo` exists, and tests can still build two-host set-ups of their own inside it (named namespaces joined
by a veth pair, as the DDS-over-a-link tests need)."""

import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(os.environ.get("MAIL_NETNS") != "loopback",
                                reason="only inside scripts/run_tests.sh's loopback-only network namespace")


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30).stdout


def test_only_loopback_and_it_is_up():
    links = [line.split(": ")[1].split("@")[0] for line in ip("-o", "link").splitlines()]
    assert links == ["lo"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # no route anywhere else
        with pytest.raises(OSError):
            s.connect(("10.203.9.9", 9))
            s.send(b"x")


def test_nested_namespaces_joined_by_a_veth_pair_talk_tcp():
    a, b = f"mail_a{os.getpid()}", f"mail_b{os.getpid()}"
    va, vb = f"va{os.getpid() % 100000}", f"vb{os.getpid() % 100000}"
    ip("netns", "add", a)
    ip("netns", "add", b)
    try:
        ip("link", "add", va, "type", "veth", "peer", "name", vb)
        ip("link", "set", va, "netns", a)
        ip("link", "set", vb, "netns", b)
        for ns, dev, addr in ((a, va, "10.203.0.1/24"), (b, vb, "10.203.0.2/24")):
            ip("-n", ns, "addr", "add", addr, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", b, sys.executable, "-c",
             "import socket; s = socket.create_server(('10.203.0.2', 47001)); print('ready', flush=True); "
             "c, _ = s.accept(); c.sendall(c.recv(16).upper())"],
            stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout.readline().strip() == "ready"
            out = subprocess.run(
                ["ip", "netns", "exec", a, sys.executable, "-c",
                 "import socket; c = socket.create_connection(('10.203.0.2', 47001), timeout=5); c.sendall(b'hello');"
                 " print(c.recv(16).decode())"], capture_output=True, text=True, timeout=30)
            assert out.stdout.strip() == "HELLO", out.stderr
        finally:
            server.kill()
            server.wait()
    finally:
        ip("netns", "del", a)
        ip("netns", "del", b)
