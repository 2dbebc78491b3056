"""The deployment artefacts: every manifest in deploy/ against its CRD's
schema, the cross-references between manifests, the production Envoy
bootstrap in a real Envoy's validate mode, the identity assertion's signing
key reaching each proxy from a Secret (and no private key anywhere but in
test fixtures), and the OCI image script.

The CRDs come from ../shared/crds beside the repository (as in CI); if they
are missing these tests fail, they do not skip."""

import copy
import hashlib
import json
import os
import re
import string
import subprocess
import tarfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from hokusai_testkit import harness

ROOT = harness.ROOT
CRDS = ROOT.parent / "shared" / "crds"
CRD_FILES = ["istio.yaml", "envoy-gateway-envoyextensionpolicies.yaml", "envoy-gateway-backends.yaml",
             "envoy-gateway-envoyproxies.yaml", "gateway-api-httproutes.yaml", "gateway-api-gateways.yaml"]
# Kinds in deploy/ with no CRD in shared/crds, each with what checks it instead.
UNVALIDATED = {("gateway.envoyproxy.io", "EnvoyPatchPolicy"): "its cluster runs through envoy --mode validate",
               # deploy/istio/gateway-signing-key-patch.yaml, a patch, not a whole Deployment
               ("apps", "Deployment"): "test_the_signing_key_reaches_the_proxy_from_a_secret"}
PROD_PLUGIN_CONFIG = ROOT / "envoy-config/production-plugin-config.json"
# The environment variable every shipped config names for the identity
# assertion's signing key.
SIGNING_KEY_ENV = json.loads(PROD_PLUGIN_CONFIG.read_text())["identity_assertion"]["signing_key_env"]
# TEST FIXTURE, not a deployment key: RFC 8032 section 7.1 test 1's published
# secret key as PKCS#8 PEM, for Envoy's validate mode to load the configs with.
TEST_SIGNING_KEY = """-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g
-----END PRIVATE KEY-----
"""


def strict(schema):
    """The CRD schema as the API server applies it with strict field
    validation (kubectl's default): fields the schema does not list are
    errors, except where the schema keeps unknown fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def crd_schemas():
    missing = [f for f in CRD_FILES if not (CRDS / f).is_file()]
    assert not missing, f"CRD files missing from {CRDS}: {missing} (CI has shared/ beside the clone)"
    schemas = {}
    for f in CRD_FILES:
        for crd in yaml.safe_load_all((CRDS / f).read_text()):
            if not crd:
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for v in crd["spec"]["versions"]:
                schema = strict(v["schema"]["openAPIV3Schema"])
                # Every object has these; some CRDs leave them out of the schema.
                schema["properties"] = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                        "metadata": {"type": "object", "required": ["name", "namespace"]},
                                        **schema["properties"]}
                schemas[(f"{group}/{v['name']}", kind)] = schema
    return schemas


# Not Kubernetes objects: Prometheus rules and their promtool tests
# (tests/test_monitoring.py checks them).
NOT_MANIFESTS = ROOT / "deploy/monitoring"


def documents():
    docs = []
    for path in sorted((ROOT / "deploy").rglob("*.yaml")):
        if path.is_relative_to(NOT_MANIFESTS):
            continue
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc:
                docs.append((f"{path.relative_to(ROOT)}#{i}", doc))
    return docs


def by_kind(kind):
    found = [doc for _, doc in documents() if doc["kind"] == kind]
    assert found, f"no {kind} in deploy/"
    return found


def schema_errors(schema, doc):
    v = jsonschema.Draft4Validator(schema)  # OpenAPI v3 schemas are draft-4 style
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in v.iter_errors(doc)]


def cel_errors(doc):
    """The CRDs' x-kubernetes-validations (CEL) rules that jsonschema cannot
    run and these documents could break, written out by hand."""
    spec, kind, errs = doc.get("spec", {}), doc["kind"], []
    if kind == "WasmPlugin" and sum(k in spec for k in ("selector", "targetRef", "targetRefs")) > 1:
        errs.append("only one of targetRefs or selector can be set")
    if kind == "EnvoyExtensionPolicy":
        if ("targetRef" in spec) == ("targetRefs" in spec) and not spec.get("targetSelectors"):
            errs.append("either targetRef or targetRefs must be used")
        for w in spec.get("wasm", []):
            code = w["code"]
            for t, field in (("Image", "image"), ("HTTP", "http")):
                if (code["type"] == t) != (field in code):
                    errs.append(f"If type is {t}, {field} field needs to be set.")
    if kind == "EnvoyProxy":
        for m in spec.get("dynamicModules", []):
            source = m["source"]
            if source.get("type", "Local") == "Local" and "local" not in source:
                errs.append("If type is Local, local field needs to be set.")
            if (source.get("type") == "Remote") != ("remote" in source):
                errs.append("If type is Remote, remote field needs to be set.")
    if kind == "Backend":
        tls = spec.get("tls", {})
        if tls.get("caCertificateRefs") and tls.get("wellKnownCACertificates"):
            errs.append("must not contain both CACertificateRefs and WellKnownCACertificates")
    if kind == "ServiceEntry" and spec.get("resolution", "NONE") == "NONE" and "endpoints" in spec:
        errs.append("resolution NONE cannot have endpoints")
    return errs


def test_every_manifest_matches_its_crd(crd_schemas):
    docs = documents()
    kinds = {doc["kind"] for _, doc in docs}
    assert {"WasmPlugin", "ServiceEntry", "DestinationRule", "EnvoyExtensionPolicy", "Backend", "HTTPRoute",
            "Gateway", "EnvoyProxy"} <= kinds, kinds
    problems = []
    for at, doc in docs:
        group = doc["apiVersion"].split("/")[0]
        if (group, doc["kind"]) in UNVALIDATED:
            continue
        schema = crd_schemas.get((doc["apiVersion"], doc["kind"]))
        if schema is None:
            problems.append(f"{at}: no CRD for {doc['apiVersion']} {doc['kind']} in {CRDS}")
            continue
        problems += [f"{at}: {e}" for e in schema_errors(schema, doc) + cel_errors(doc)]
    assert not problems, "\n".join(problems)


def test_schema_check_catches_mistakes(crd_schemas):
    """The check above would see a typo, a wrong enum and a misplaced field."""
    wp = by_kind("WasmPlugin")[0]
    schema = crd_schemas[(wp["apiVersion"], "WasmPlugin")]
    assert not schema_errors(schema, wp)
    for mutate, expect in [
        (lambda d: d["spec"].update(failStrategy="FAIL_CLOSED"), "failStrategy"),
        (lambda d: d["spec"].update(pluginconfig={}), "pluginconfig"),
        (lambda d: d["spec"]["match"][0].update(ports=[{"port": 443}]), "port"),
    ]:
        bad = copy.deepcopy(wp)
        mutate(bad)
        assert any(expect in e for e in schema_errors(schema, bad)), expect
    eep = by_kind("EnvoyExtensionPolicy")[0]
    bad = copy.deepcopy(eep)
    bad["spec"]["wasm"][0]["code"]["type"] = "OCI"
    assert schema_errors(crd_schemas[(eep["apiVersion"], "EnvoyExtensionPolicy")], bad)


def test_manifests_point_at_each_other():
    """The cluster each plugin config names is the one its platform creates,
    for the host and port the auth-service manifests declare."""
    (se,), (dr,) = by_kind("ServiceEntry"), by_kind("DestinationRule")
    host, (port,) = se["spec"]["hosts"][0], se["spec"]["ports"]
    assert se["spec"]["resolution"] == "DNS" and port["number"] == 443
    assert dr["spec"]["host"] == host and dr["metadata"]["namespace"] == se["metadata"]["namespace"]
    tls = dr["spec"]["trafficPolicy"]["tls"]
    assert tls["mode"] == "SIMPLE" and tls["sni"] == host
    for wp in by_kind("WasmPlugin"):
        assert wp["metadata"]["namespace"] == se["metadata"]["namespace"]  # exportTo "."
        auth = wp["spec"]["pluginConfig"]["auth"]
        assert auth["cluster"] == f"outbound|{port['number']}||{host}"
        assert auth["authority"] == host
        assert wp["spec"]["failStrategy"] == "FAIL_CLOSE" and wp["spec"]["phase"] == "AUTHN"
        assert wp["spec"]["url"].startswith("oci://")

    (backend,), patches = by_kind("Backend"), patch_clusters()
    patch = patches["hokusai_auth"]
    (jp,) = patch["spec"]["jsonPatches"]
    cluster = jp["operation"]["value"]
    assert jp["type"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    assert jp["operation"]["op"] == "add" and jp["operation"]["path"] == ""
    assert jp["name"] == cluster["name"]
    sock = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    fqdn = backend["spec"]["endpoints"][0]["fqdn"]
    assert (sock["address"], sock["port_value"]) == (fqdn["hostname"], fqdn["port"])
    assert cluster["transport_socket"]["typed_config"]["sni"] == backend["spec"]["tls"]["sni"] == fqdn["hostname"]
    (gateway,), routes = by_kind("Gateway"), {r["metadata"]["name"]: r for r in by_kind("HTTPRoute")}
    for p in patches.values():  # each cluster lands on this Gateway
        assert p["spec"]["targetRef"]["kind"] == "Gateway"
        assert p["spec"]["targetRef"]["name"] == gateway["metadata"]["name"]
        assert p["metadata"]["namespace"] == gateway["metadata"]["namespace"]
    for eep in by_kind("EnvoyExtensionPolicy"):
        for ref in eep["spec"]["targetRefs"]:
            # The policy's HTTPRoutes hang off the patched Gateway, in the policy's namespace.
            assert ref["kind"] == "HTTPRoute" and ref["name"] in routes, ref
            route = routes[ref["name"]]
            assert route["metadata"]["namespace"] == eep["metadata"]["namespace"]
            assert any(p["name"] == gateway["metadata"]["name"] for p in route["spec"]["parentRefs"])
            # Envoy re-matches after the filter strips the mount: the route takes every path.
            assert {"type": "PathPrefix", "value": "/"} in [m["path"] for r in route["spec"]["rules"]
                                                           for m in r["matches"]]
        for w in eep["spec"].get("wasm", []) + eep["spec"].get("dynamicModule", []):
            assert w.get("failOpen", False) is False
            assert w["config"]["auth"]["cluster"] == cluster["name"]
            assert w["config"]["auth"]["authority"] == fqdn["hostname"]
            # Every host a rule selects is one the route serves.
            hosts = {h for ref in eep["spec"]["targetRefs"] for h in routes[ref["name"]]["spec"]["hostnames"]}
            for rule in w["config"].get("routes", []):
                if "host" in rule["match"]:
                    assert rule["match"]["host"] in hosts, rule


def test_the_native_policy_loads_an_allowlisted_module_that_stays_loaded():
    """The dynamicModule entry names a module the EnvoyProxy allowlists, by
    the .so the build makes, never unloaded (its statics are the cache)."""
    allowed = {m["name"]: m for p in by_kind("EnvoyProxy") for m in p["spec"].get("dynamicModules", [])}
    native = [m for eep in by_kind("EnvoyExtensionPolicy") for m in eep["spec"].get("dynamicModule", [])]
    assert native, "no dynamicModule policy in deploy/"
    for m in native:
        assert m["filterName"] == "hokusai_auth"
        entry = allowed[m["name"]]
        assert entry["doNotClose"] is True
        assert entry["source"]["local"]["path"].endswith("/" + harness.NATIVE.name)
    # The two policies are alternatives for the same route.
    targets = [eep["spec"]["targetRefs"] for eep in by_kind("EnvoyExtensionPolicy")]
    assert len(targets) == 2 and targets[0] == targets[1]


# --- Envoy's validate mode ----------------------------------------------------

def envoy_validate(config_path: Path, signing_key: bool = True) -> subprocess.CompletedProcess:
    """Envoy's validate mode on a bootstrap, with the test signing key in
    Envoy's environment (as a deployment puts the real one) or without it."""
    binary = harness.envoy_binary()
    assert binary.exists(), f"no Envoy at {binary}: run scripts/setup.sh"
    env = {**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(harness.NATIVE.parent)}
    env.pop(SIGNING_KEY_ENV, None)
    if signing_key:
        env[SIGNING_KEY_ENV] = TEST_SIGNING_KEY
    return subprocess.run([str(binary), "--mode", "validate", "-c", str(config_path), "-l", "warning"],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=mlflow.example.test",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    return d / "cert.pem", d / "key.pem"


def render_production(tmp_path, tls_files, plugin_config, name="production.yaml") -> Path:
    assert harness.WASM.exists(), f"{harness.WASM} is missing: run scripts/setup.sh"
    assert harness.NATIVE.exists(), f"{harness.NATIVE} is missing: run scripts/setup.sh"
    cert, key = tls_files
    text = string.Template((ROOT / "envoy-config" / name).read_text()).safe_substitute(
        TLS_CERT_CHAIN=cert, TLS_PRIVATE_KEY=key, WASM=harness.WASM,
        PLUGIN_CONFIG=json.dumps(json.dumps(plugin_config)),
        MLFLOW_HOST="mlflow.mlflow.svc.cluster.local", MLFLOW_PORT=5000,
        MLFLOW_AUTHORITY="mlflow.mlflow.svc.cluster.local:5000")
    assert "${" not in text, "a placeholder left unfilled"
    path = tmp_path / name
    path.write_text(text)
    return path


def test_production_bootstrap_passes_envoy_validate(tmp_path, tls_files):
    cfg = json.loads(PROD_PLUGIN_CONFIG.read_text())
    path = render_production(tmp_path, tls_files, cfg)
    boot = yaml.safe_load(path.read_text())
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    auth = clusters[cfg["auth"]["cluster"]]  # the cluster the filter calls exists
    tls = auth["transport_socket"]["typed_config"]
    assert tls["sni"] == cfg["auth"]["authority"]
    assert tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]["matcher"] == \
        {"exact": cfg["auth"]["authority"]}
    r = envoy_validate(path)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def test_envoy_validate_loads_the_filter_and_its_config(tmp_path, tls_files):
    """Validate mode starts the .wasm and hands it the plugin config, so the
    test above checks the config the real filter reads."""
    cfg = json.loads(PROD_PLUGIN_CONFIG.read_text())
    del cfg["auth"]["service_id"]
    r = envoy_validate(render_production(tmp_path, tls_files, cfg))
    assert r.returncode != 0 and "service_id" in r.stderr, r.stdout + r.stderr


def test_the_native_production_bootstrap_passes_envoy_validate(tmp_path, tls_files):
    """Validate mode loads the module and hands it the plugin config: the
    good one passes, a broken one is refused naming the field."""
    cfg = json.loads(PROD_PLUGIN_CONFIG.read_text())
    r = envoy_validate(render_production(tmp_path, tls_files, cfg, "production-native.yaml"))
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr
    del cfg["auth"]["service_id"]
    r = envoy_validate(render_production(tmp_path, tls_files, cfg, "production-native.yaml"))
    assert r.returncode != 0 and "service_id" in r.stderr, r.stdout + r.stderr


def test_the_bootstraps_refuse_their_config_without_the_signing_key(tmp_path, tls_files):
    """Both builds read the key from Envoy's environment at load: without it
    Envoy refuses the configuration naming the field, never runs unsigned."""
    cfg = json.loads(PROD_PLUGIN_CONFIG.read_text())
    for name in ("production.yaml", "production-native.yaml"):
        r = envoy_validate(render_production(tmp_path, tls_files, cfg, name), signing_key=False)
        assert r.returncode != 0, name + r.stdout + r.stderr
        assert f"identity_assertion.signing_key_env: the environment variable {SIGNING_KEY_ENV} is not set" \
            in r.stderr, name + r.stderr
        assert "BEGIN" not in r.stdout + r.stderr


def test_the_native_production_bootstrap_is_the_wasm_one_but_for_the_filter(tmp_path, tls_files):
    cfg = json.loads(PROD_PLUGIN_CONFIG.read_text())
    wasm = yaml.safe_load(render_production(tmp_path, tls_files, cfg).read_text())
    native = yaml.safe_load(render_production(tmp_path, tls_files, cfg, "production-native.yaml").read_text())
    harness.as_native(wasm)
    assert wasm == native


def test_bootstraps_define_the_cluster_their_plugin_config_names():
    local = yaml.safe_load(re.sub(r"\$\{\w+\}", "0", (ROOT / "envoy-config/local.yaml").read_text()))
    names = {c["name"] for c in local["static_resources"]["clusters"]}
    assert json.loads(harness.PLUGIN_CONFIG.read_text())["auth"]["cluster"] in names


# --- the identity assertion's signing key ------------------------------------

def secret_env(container: dict) -> dict:
    """A container's environment variables that come from a Secret: name -> secretKeyRef."""
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})}


def test_the_signing_key_reaches_the_proxy_from_a_secret():
    """Every shipped config names the same variable; each platform fills it
    in the proxy's environment from one Secret and hands it to the filter by
    name, so the key is never in a manifest, a plugin config or a config dump."""
    refs = []
    # Plain Envoy: the .wasm's VM gets the variable from Envoy's environment;
    # the native build reads that environment itself.
    prod = yaml.safe_load(re.sub(r"\$\{\w+\}", "0", (ROOT / "envoy-config/production.yaml").read_text()))
    (hf,) = [f for listener in prod["static_resources"]["listeners"] for chain in listener["filter_chains"]
             for f in chain["filters"][0]["typed_config"]["http_filters"] if f["name"] == "hokusai_auth"]
    vm = hf["typed_config"]["config"]["vm_config"]
    assert vm["environment_variables"] == {"host_env_keys": [SIGNING_KEY_ENV]}  # no key_values: config dumps

    # Istio: the gateway Deployment's istio-proxy container from the Secret,
    # the WasmPlugin's VM from that container's environment (HOST, no value).
    (patch,) = by_kind("Deployment")
    (proxy,) = patch["spec"]["template"]["spec"]["containers"]
    assert proxy["name"] == "istio-proxy"
    refs.append(secret_env(proxy)[SIGNING_KEY_ENV])
    for wp in by_kind("WasmPlugin"):
        assert wp["metadata"]["namespace"] == patch["metadata"]["namespace"]
        assert {"name": SIGNING_KEY_ENV, "valueFrom": "HOST"} in wp["spec"]["vmConfig"]["env"]
        assert wp["spec"]["pluginConfig"]["identity_assertion"]["signing_key_env"] == SIGNING_KEY_ENV

    # Envoy Gateway: the EnvoyProxy's container from the Secret; the .wasm's
    # VM by hostKeys; the native module reads the process environment.
    (gateway,) = by_kind("Gateway")
    proxies = {p["metadata"]["name"]: p for p in by_kind("EnvoyProxy")}

    def from_proxy(envoy_proxy):
        assert envoy_proxy["metadata"]["namespace"] == gateway["metadata"]["namespace"]
        container = envoy_proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]
        return secret_env(container)[SIGNING_KEY_ENV]

    ref = gateway["spec"]["infrastructure"]["parametersRef"]
    assert (ref["group"], ref["kind"]) == ("gateway.envoyproxy.io", "EnvoyProxy")
    for eep in by_kind("EnvoyExtensionPolicy"):
        for w in eep["spec"].get("wasm", []):
            assert w["env"]["hostKeys"] == [SIGNING_KEY_ENV]
            assert w["config"]["identity_assertion"]["signing_key_env"] == SIGNING_KEY_ENV
            refs.append(from_proxy(proxies[ref["name"]]))
        for m in eep["spec"].get("dynamicModule", []):
            (native,) = [p for p in proxies.values()
                         if m["name"] in {d["name"] for d in p["spec"].get("dynamicModules", [])}]
            assert m["config"]["identity_assertion"]["signing_key_env"] == SIGNING_KEY_ENV
            refs.append(from_proxy(native))
    assert len(refs) == 3, refs  # Istio, Envoy Gateway's .wasm and its native build
    for r in refs:
        # One Secret everywhere (its namespace is the proxies'); a missing one
        # stops the pod rather than starting a proxy that refuses its config.
        assert r == {"name": "hokusai-identity-signing-key", "key": "signing-key.pem", "optional": False}, r


# A PEM private key: the BEGIN line and a base64 body (in a file, or in a
# string with \n escapes).
PRIVATE_KEY_BLOCK = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:\\[rn]|[\s\"'+])*[A-Za-z0-9+/]{40}")


def test_no_private_key_outside_test_fixtures():
    """A private key in the repository is only ever a test fixture: in a
    tests/ or testkit/ folder, or in a Rust file's #[cfg(test)] part. Shipped
    files (manifests, bootstraps, plugin configs, docs) hold none."""
    assert PRIVATE_KEY_BLOCK.search(TEST_SIGNING_KEY) and PRIVATE_KEY_BLOCK.search(json.dumps(TEST_SIGNING_KEY))
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True, timeout=60).stdout.decode().split("\0")
    files = [f for f in listed if f]
    assert "envoy-config/production-plugin-config.json" in files
    found = []
    for rel in files:
        if {"tests", "testkit"} & set(Path(rel).parts[:-1]):
            continue
        try:
            text = (ROOT / rel).read_text()
        except (OSError, UnicodeDecodeError):  # deleted in the work tree, or binary
            continue
        test_part = text.find("#[cfg(test)]") if rel.endswith(".rs") else -1
        for m in PRIVATE_KEY_BLOCK.finditer(text):
            if not 0 <= test_part < m.start():
                found.append(f"{rel}:{text.count(chr(10), 0, m.start()) + 1}")
    assert not found, f"private key material outside test fixtures: {found}"


def patch_clusters() -> dict:
    """The EnvoyPatchPolicies by the one cluster each adds."""
    out = {}
    for p in by_kind("EnvoyPatchPolicy"):
        (jp,) = p["spec"]["jsonPatches"]
        assert jp["operation"]["op"] == "add" and jp["operation"]["path"] == ""
        assert jp["name"] == jp["operation"]["value"]["name"]
        out[jp["name"]] = p
    assert set(out) == {"hokusai_auth", "hokusai_ratelimit"}, set(out)
    return out


def test_the_rate_limit_cluster_speaks_http2():
    """gRPC: a cluster without HTTP/2 fails every ShouldRateLimit call."""
    cluster = patch_clusters()["hokusai_ratelimit"]["spec"]["jsonPatches"][0]["operation"]["value"]
    prod = yaml.safe_load(re.sub(r"\$\{\w+\}", "0", (ROOT / "envoy-config/production.yaml").read_text()))
    local = yaml.safe_load(re.sub(r"\$\{\w+\}", "0", (ROOT / "envoy-config/local.yaml").read_text()))
    found = [cluster] + [c for b in (prod, local) for c in b["static_resources"]["clusters"]
                         if c["name"] == "hokusai_ratelimit"]
    assert len(found) == 3, "the Envoy Gateway patch, production.yaml and local.yaml each define it"
    for c in found:
        opts = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        assert "http2_protocol_options" in opts["explicit_http_config"], c["name"]


def test_envoy_gateway_patch_cluster_passes_envoy_validate(tmp_path):
    clusters = [p["spec"]["jsonPatches"][0]["operation"]["value"] for p in patch_clusters().values()]
    boot = {"static_resources": {"clusters": clusters}}
    path = tmp_path / "patch-cluster.yaml"
    path.write_text(json.dumps(boot))
    r = envoy_validate(path)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


# --- the OCI image --------------------------------------------------------------

def run_oci_script(out: Path) -> dict:
    r = subprocess.run(["bash", str(ROOT / "scripts/oci-image.sh"), str(out)], capture_output=True, text=True,
                       timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def test_oci_image_layout(tmp_path):
    info = run_oci_script(tmp_path / "a")
    layout, tag = Path(info["layout"]), info["tag"]
    wasm = harness.WASM.read_bytes()
    assert info["wasm_sha256"] == hashlib.sha256(wasm).hexdigest()
    # Independently of the script: skopeo reads the layout back.
    ref = f"oci:{layout}:{tag}"
    inspect = json.loads(subprocess.run(["skopeo", "inspect", ref], check=True, capture_output=True,
                                        text=True, timeout=120).stdout)
    assert inspect["Digest"] == info["manifest_digest"]
    manifest = json.loads(subprocess.run(["skopeo", "inspect", "--raw", ref], check=True, capture_output=True,
                                         text=True, timeout=120).stdout)
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    blob = layout / "blobs" / "sha256" / layer["digest"].split(":")[1]
    with tarfile.open(blob, "r:gz") as tar:
        assert tar.getnames() == ["plugin.wasm"]
        assert tar.extractfile("plugin.wasm").read() == wasm
    # Reproducible: the same .wasm gives the same digest, so it can be pinned.
    assert run_oci_script(tmp_path / "b")["manifest_digest"] == info["manifest_digest"]
