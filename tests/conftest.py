import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


@pytest.fixture(scope="session")
def workdir():
    d = harness.workdir("hokusai-tests-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def keysvc(workdir):
    s = harness.StandIn("keys", workdir, name=f"keys-{id(object())}")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def echo(workdir):
    s = harness.StandIn("echo", workdir, name=f"echo-{id(object())}")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gw(workdir, echo, keysvc):
    """Envoy with the local plugin config in front of the echo upstream."""
    e = harness.Envoy(workdir, upstream_port=echo.port, auth_port=keysvc.port, name=f"envoy-gw-{id(object())}")
    yield e
    e.stop()


@pytest.fixture
def start_envoy(workdir, echo, keysvc):
    """Starts Envoy with the filter in front of the echo upstream."""
    started = []

    def start(config=None, **kw):
        kw.setdefault("upstream_port", echo.port)
        kw.setdefault("auth_port", keysvc.port)
        e = harness.Envoy(workdir, config=config, name=f"envoy-{len(started)}-{id(object())}", **kw)
        started.append(e)
        return e

    yield start
    for e in started:
        e.stop()
