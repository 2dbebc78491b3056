"""The local stack (key-service stand-in, MLflow, Envoy with the filter) and
the switches that break one layer of it at a time, for scripts/stack.py and
the verifier's tests. Every switch is something a real deployment gets
wrong."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hokusai_testkit import harness

# What MLflow (Flask) answers for a path it does not serve.
NOT_FOUND_PAGE = "<!doctype html>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n"


@dataclass
class Switches:
    service_id: str | None = None  # the gateway asks the key service for another service
    mount_prefixes: list[str] | None = None  # the filter strips other mounts
    ajax_api: bool = False  # the filter maps api/2.0 to ajax-api/2.0
    mlflow_allowed_hosts: str | None = None  # MLflow's --allowed-hosts
    ajax_only: bool = False  # the upstream serves /ajax-api/ but not /api/2.0, /api/3.0
    no_filter: bool = False  # the filter is not on the route
    no_route: bool = False  # the gateway routes nothing to MLflow
    auth_down: bool = False  # nothing listens where the key service should be
    mlflow_down: bool = False  # nothing listens where MLflow should be
    tls_names: list[str] | None = None  # HTTPS, with a certificate for these names
    replicas: int = 1  # Envoy replicas, on consecutive ports
    global_rate_limit: bool = False  # Redis + the rate limit service, rate_limit.mode "global"
    ownership: bool = True  # MLflow's auth app + the Hokusai plugin, the filter signing who calls
    credential_sources: list[str] | None = None  # where the filter reads the key (credentials.sources)
    identity_audience: str | None = None  # the filter signs for another audience than MLflow's ("mlflow")
    # A front proxy (a second Envoy, as a load balancer or CDN would be) in
    # front of each gateway, removing these request headers ("authorization").
    front_proxy_drops: list[str] | None = None

    def plugin_config(self) -> dict:
        cfg = harness.plugin_config()
        if self.service_id:
            cfg["auth"]["service_id"] = self.service_id
        if self.mount_prefixes is not None:
            cfg["mlflow"]["mount_prefixes"] = self.mount_prefixes
        if self.ajax_api:
            cfg["mlflow"]["ajax_api"] = True
        if self.credential_sources is not None:
            cfg["credentials"] = {**cfg.get("credentials", {}), "sources": self.credential_sources}
        if self.identity_audience:
            # The rest of the section (signing_key_env, kid) from the stack's Signing.
            cfg["identity_assertion"] = {"audience": self.identity_audience}
        if self.global_rate_limit:
            # 100 ms, not 20: MLflow shares this machine, and a worker's first
            # call opens its HTTP/2 connection.
            cfg["rate_limit"] = {"mode": "global", "cluster": "hokusai_ratelimit", "timeout_ms": 100,
                                 "replicas": self.replicas}
        return cfg


def gateway_edits(s: Switches, tls_files: tuple[Path, Path] | None):
    """The bootstrap changes the switches ask for."""
    def edit(boot: dict):
        chain = boot["static_resources"]["listeners"][0]["filter_chains"][0]
        hcm = chain["filters"][0]["typed_config"]
        vhost = next(v for v in hcm["route_config"]["virtual_hosts"] if v["name"] == "mlflow")
        if s.no_filter:
            hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "hokusai_auth"]
        if s.no_route:
            for route in vhost["routes"]:
                if route.get("name") == "mlflow":
                    route["match"] = {"prefix": "/somewhere-else/"}
        if s.ajax_only:
            vhost["routes"][-1:-1] = [not_served(prefix) for prefix in ("/api/2.0/", "/api/3.0/")]
        if tls_files:
            chain["transport_socket"] = downstream_tls(*tls_files)
    return edit


# A front proxy: everything to the gateway, these request headers removed
# first. It adds no x-envoy-* headers of its own, as a load balancer or CDN
# would not. ${NAME}: filled by harness.bootstrap() (UPSTREAM_PORT: the gateway).
FRONT_PROXY = """\
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 0 }
static_resources:
  listeners:
  - name: gateway
    address:
      socket_address: { address: 127.0.0.1, port_value: ${LISTEN_PORT} }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: front
          route_config:
            name: front
            virtual_hosts:
            - name: front
              domains: ["*"]
              request_headers_to_remove: ${DROPS}
              routes:
              - match: { prefix: "/" }
                route: { cluster: gateway, timeout: 600s, idle_timeout: 120s }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              suppress_envoy_headers: true
  clusters:
  - name: gateway
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: gateway
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${UPSTREAM_PORT} } } }
"""


def front_proxy(workdir: Path, name: str, gateway_port: int, drops: list[str], listen_port: int = 0,
                tls_files: tuple[Path, Path] | None = None) -> harness.Envoy:
    """A real Envoy in front of the plain-HTTP gateway at `gateway_port`
    that removes the `drops` request headers (and with `tls_files`
    terminates TLS, as a load balancer does); stop() it."""
    template = workdir / f"{name}.template.yaml"
    template.write_text(FRONT_PROXY)

    def edit(boot: dict):
        boot["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = downstream_tls(*tls_files)

    options = harness.EnvoyOptions(upstream_port=gateway_port, auth_port=0, template=template, concurrency=1,
                                   listen_port=listen_port, extra_vars={"DROPS": json.dumps(drops)},
                                   edit=edit if tls_files else None)
    return harness.Envoy(workdir, options, name=name)


def not_served(prefix: str) -> dict:
    return {"name": "not-served" + prefix.replace("/", "-"), "match": {"prefix": prefix},
            "direct_response": {"status": 404, "body": {"inline_string": NOT_FOUND_PAGE}}}


def downstream_tls(cert: Path, key: Path) -> dict:
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": {"tls_certificates": [{
            "certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}]}}}


def self_signed(workdir: Path, names: list[str]) -> tuple[Path, Path]:
    """A certificate for `names` (DNS names or IP addresses), its own CA."""
    san = ",".join(f"IP:{n}" if n.replace(".", "").isdigit() else f"DNS:{n}" for n in names)
    cert, key = workdir / f"tls-{names[0]}.pem", workdir / f"tls-{names[0]}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={san}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


class LocalStack:
    """Starts what the switches leave standing; `mlflow` and `keysvc` may be
    shared with other stacks (a shared MLflow is used as it was started).
    With ownership, the key pair the filter signs with and MLflow trusts is
    made once in the MLflow data directory and kept. Stop it with stop()."""

    def __init__(self, workdir: Path, switches: Switches | None = None, name: str = "stack",
                 keysvc: harness.StandIn | None = None, mlflow: harness.MlflowServer | None = None,
                 listen_port: int = 0, mlflow_dir: Path | None = None):
        self.s = switches or Switches()
        self.owned: list = []
        self.dependencies: list = []  # what revive_dependencies restarts
        try:
            self.keysvc = keysvc or self.own(harness.StandIn("keys", workdir, name=f"{name}-keys"))
            data = mlflow_dir or workdir / f"{name}-mlflow"
            self.ownership = harness.Ownership.made_in(data / "identity") if self.s.ownership else None
            self.mlflow = self.mlflow_server(data, mlflow)
            self.ratelimit_port = self.rate_limit_service(workdir, name)
            # One certificate for every replica, so that one CA file fits them all.
            self.tls_files = self_signed(workdir, self.s.tls_names) if self.s.tls_names else None
            self.ca_file = str(self.tls_files[0]) if self.tls_files else None
            self.envoys, self.urls = [], []
            for i in range(self.s.replicas):
                self.start_envoy(workdir, f"{name}-{i}" if i else name, listen_port + i if listen_port else 0)
            self.envoy, self.url = self.envoys[0], self.urls[0]
        except BaseException:
            self.stop()
            raise

    def own(self, part):
        self.owned.append(part)
        return part

    def mlflow_server(self, data: Path, shared):
        if self.s.mlflow_down:
            return None
        if shared is not None and not self.s.mlflow_allowed_hosts:
            return shared
        args = ["--allowed-hosts", self.s.mlflow_allowed_hosts] if self.s.mlflow_allowed_hosts else None
        return self.own(harness.MlflowServer(data, extra_args=args, ownership=self.ownership))

    def rate_limit_service(self, workdir: Path, name: str) -> int | None:
        """Redis and the rate limit service the replicas share (global mode)."""
        if not self.s.global_rate_limit:
            return None
        self.redis = self.own(harness.Redis(workdir, name=f"{name}-redis"))
        rls = self.own(harness.StandIn("ratelimit", workdir, redis_url=self.redis.url, name=f"{name}-ratelimit"))
        self.dependencies = [self.redis, rls]
        return rls.port

    def revive_dependencies(self) -> list[str]:
        """Restarts Redis or the rate limit service if one exited (on its
        port: the gateways keep their clusters), so that an outage can be
        rehearsed; the names of those restarted."""
        dead = [d for d in self.dependencies if not d.proc.alive()]
        for d in dead:
            d.restart()
        return [d.proc.name for d in dead]

    def start_envoy(self, workdir: Path, name: str, listen_port: int):
        upstream = self.mlflow.port if self.mlflow else harness.free_port()
        auth = harness.free_port() if self.s.auth_down else self.keysvc.port
        signing = self.ownership.signing() if self.ownership else None
        config = self.s.plugin_config()
        if signing and "identity_assertion" in config:
            config["identity_assertion"] = {**signing.section(), **config["identity_assertion"]}
        # Behind a front proxy, the front proxy listens where the gateway
        # would, and terminates TLS.
        fronted = bool(self.s.front_proxy_drops)
        options = harness.EnvoyOptions(upstream_port=upstream, auth_port=auth, config=config,
                                       listen_port=0 if fronted else listen_port,
                                       edit=gateway_edits(self.s, None if fronted else self.tls_files),
                                       ratelimit_port=self.ratelimit_port, signing=signing)
        envoy = self.own(harness.Envoy(workdir, options, name=f"{name}-envoy"))
        self.envoys.append(envoy)
        port = envoy.port
        if fronted:
            port = self.own(front_proxy(workdir, f"{name}-front", envoy.port, self.s.front_proxy_drops,
                                        listen_port, self.tls_files)).port
        self.urls.append(f"{'https' if self.tls_files else 'http'}://127.0.0.1:{port}")

    def stop(self):
        for part in reversed(self.owned):
            part.stop()
        self.owned = []
