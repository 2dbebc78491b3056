import secrets
import shutil

import pytest

from hokusai_testkit import harness


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


class Keys:
    """Registers fresh keys in the stand-in so that each test counts its own callouts."""

    def __init__(self, keysvc):
        self.keysvc = keysvc
        self.entries = list(harness.DEV_KEYS["keys"])

    def new(self, prefix="hk_test_", **fields) -> str:
        key = prefix + secrets.token_hex(12)
        entry = {"key": key, "user_id": "u_" + key[-6:], "key_id": "k_" + key[-6:], "service_id": "platform",
                 "scopes": ["mlflow:read", "mlflow:write"], "rate_limit_per_hour": 100000, **fields}
        entry = {k: v for k, v in entry.items() if v is not None}  # None: leave the field out
        self.entries.append(entry)
        self.keysvc.set_keys({"keys": self.entries})
        return key

    def update(self, key: str, **fields):
        """Changes a key's entry at the key service (e.g. is_admin)."""
        self.entries = [{**e, **fields} if e["key"] == key else e for e in self.entries]
        self.keysvc.set_keys({"keys": self.entries})

    def revoke(self, key: str):
        self.entries = [e for e in self.entries if e["key"] != key]
        self.keysvc.set_keys({"keys": self.entries})


@pytest.fixture(scope="module")
def keys(keysvc):
    return Keys(keysvc)


@pytest.fixture
def normal_mode(keysvc):
    """Every test starts and ends with the key service answering normally."""
    keysvc.mode("normal")
    yield
    keysvc.mode("normal")


@pytest.fixture(scope="module")
def gw(workdir, echo, keysvc):
    """Envoy with the local plugin config in front of the echo upstream."""
    e = harness.Envoy(workdir, harness.EnvoyOptions(upstream_port=echo.port, auth_port=keysvc.port),
                      name=f"envoy-gw-{id(object())}")
    yield e
    e.stop()


@pytest.fixture
def start_envoy(workdir, echo, keysvc):
    """Starts Envoy with the filter in front of the echo upstream; keyword
    arguments are harness.EnvoyOptions fields (the ports default to the
    echo upstream's and the key service's)."""
    started = []

    def start(config=None, **options):
        options.setdefault("upstream_port", echo.port)
        options.setdefault("auth_port", keysvc.port)
        e = harness.Envoy(workdir, harness.EnvoyOptions(config=config, **options),
                          name=f"envoy-{len(started)}-{id(object())}")
        started.append(e)
        return e

    yield start
    for e in started:
        e.stop()
