"""From one request's evidence to the layer that failed and what to change.

Evidence used: whether any HTTP answer came (and why not), the filter's
reply marker (`x-hokusai-auth-reply`, on every reply the filter makes
itself), the status, the body's shape, and whether Envoy got the answer from
an upstream (`x-envoy-upstream-service-time`)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from .probe import Evidence, Target


@dataclass
class Diagnosis:
    layer: str
    fix: str


def diagnose(ev: Evidence, t: Target) -> Diagnosis:
    if ev.error is not None:
        return no_answer(ev.error, t)
    if ev.marker:
        return filter_reply(ev, t)
    return other_reply(ev, t)


# --- no HTTP answer ------------------------------------------------------------


def no_answer(error: str, t: Target) -> Diagnosis:
    where = f"{t.host}:{t.port}"
    if "mismatch" in error or "doesn't match" in error:
        return Diagnosis("TLS", f"the certificate at {where} is not for {t.host}: serve a certificate whose "
                                "names include it, or use the host name the certificate names")
    if "CERTIFICATE_VERIFY_FAILED" in error:
        return Diagnosis("TLS", f"the certificate at {where} is not trusted here: pass --ca-file with the CA "
                                "that signed it (or set REQUESTS_CA_BUNDLE)")
    if "WRONG_VERSION_NUMBER" in error or "record layer failure" in error:
        return Diagnosis("TLS", f"{where} does not speak TLS: use http:// (or the gateway's HTTPS port)")
    if "NameResolutionError" in error or "Name or service not known" in error:
        return Diagnosis("DNS", f"{t.host} does not resolve: check the host name and DNS")
    if "Connection refused" in error or "NewConnectionError" in error:
        return Diagnosis("TCP", f"nothing accepts connections at {where}: wrong host or port, "
                                "or the gateway is down")
    if "Timeout" in error or "timed out" in error:
        return Diagnosis("network", f"no answer from {where} in time: a firewall dropping packets, "
                                    "or the gateway or MLflow hanging")
    if "RemoteDisconnected" in error or "BadStatusLine" in error or "InvalidChunk" in error:
        return Diagnosis("HTTP", f"{where} does not answer HTTP (or closed the connection): is it the "
                                 f"gateway, and {'HTTPS' if t.tls else 'plain HTTP'}?")
    return Diagnosis("network", f"no HTTP answer from {where}: {error}")


# --- the filter's own replies -----------------------------------------------------


def filter_reply(ev: Evidence, t: Target) -> Diagnosis:
    message = ev.json().get("message", "")
    why = ev.marker or ""
    if why == "invalid_key":
        service = re.search(r"service '([^']*)'", message)
        sid = service.group(1) if service else "?"
        return Diagnosis("key", f"the key service rejected the key for service_id '{sid}' (the gateway's "
                                "auth.service_id): the key belongs to another service or environment "
                                "(staging vs production), or it expired or was revoked; check "
                                "auth.service_id first if every key fails")
    if why in ("missing", "empty", "malformed", "too_long", "conflicting", "unsupported_scheme"):
        return Diagnosis("key", f"the filter found no usable key ({why}): {message} "
                                "(set MLFLOW_TRACKING_TOKEN to the Hokusai API key)")
    if why == "forbidden":
        return Diagnosis("scopes", f"the key is valid but lacks a scope: {message}")
    if why == "rate_limited":
        return Diagnosis("rate limit", f"the key is over its hourly limit until {reset_time(ev)}")
    if why == "auth_rate_limited":
        return Diagnosis("key service", "the key service is rate-limiting this key: retry in a minute")
    if why == "unavailable":
        return Diagnosis("key service", "the Hokusai key service is unavailable (the filter's 503): the "
                                        "gateway cannot reach it or it failed; see the filter's "
                                        "callout.error.* stats and the auth cluster")
    if why == "bad_path":
        return Diagnosis("path", f"the filter refused an ambiguous path: {message}")
    return Diagnosis("filter", f"the filter answered {ev.status} ({why}): {message}")


def reset_time(ev: Evidence) -> str:
    reset = ev.headers.get("x-ratelimit-reset", "")
    if not reset.isdigit():
        return "the window ends"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(reset)))


# --- replies from Envoy or MLflow ---------------------------------------------------


def other_reply(ev: Evidence, t: Target) -> Diagnosis:
    body = ev.body.strip()
    if ev.status == 403 and "Invalid Host header" in body:
        return Diagnosis("MLflow host check", f"MLflow refused the Host it received (this request left with "
                                              f"Host '{t.host}:{t.port}'; a gateway route that rewrites the "
                                              "host sends its own): start MLflow with --allowed-hosts listing "
                                              "that host, or rewrite the host on the gateway route to one "
                                              "MLflow allows (Envoy host_rewrite_literal, an HTTPRoute "
                                              "URLRewrite, an Istio VirtualService rewrite.authority)")
    if ev.status in (502, 503, 504) and not ev.from_upstream:
        return Diagnosis("MLflow", f"the gateway could not reach MLflow ({ev.status} {body[:80]!r}): "
                                   "check the MLflow server and the gateway's route and cluster for it")
    if ev.status == 404 and not body and not ev.from_upstream:
        return Diagnosis("route", f"the gateway has no route for {t.mount}: add one that sends "
                                  f"{t.mount}/ (and the rewritten paths, /api/, /ajax-api/, /) to MLflow")
    if ev.status == 404:
        return Diagnosis("path rewrite", "MLflow has no such path: the path the gateway sends does not fit "
                                         "the server (see the next diagnosis line)")
    if ev.status == 401 and ev.headers.get("www-authenticate", "").startswith("HokusaiIdentity"):
        return assertion_refused(ev.json().get("message", ""))
    if ev.status == 401 and ev.headers.get("www-authenticate", "").startswith('Basic realm="mlflow"'):
        return Diagnosis("MLflow auth app", "MLflow's auth app asks for its own password: it runs with its "
                                            "default authorization_function, not the Hokusai plugin; set "
                                            "authorization_function = hokusai_mlflow_plugin:authenticate in "
                                            "the auth ini (MLFLOW_AUTH_CONFIG_PATH), see mlflow-plugin/README.md")
    if ev.status == 500 and "Hokusai identity plugin is misconfigured" in body:
        return Diagnosis("MLflow auth app", f"{ev.json().get('message', body[:160])}: fix it and restart "
                                            "MLflow (with --app-name hokusai-auth it refuses to start instead)")
    if ev.status in (401, 403):
        return Diagnosis("gateway", f"a {ev.status} that is not the Hokusai filter's (no "
                                    "x-hokusai-auth-reply): another authentication layer answered")
    return Diagnosis("upstream", f"unexpected {ev.status} from {'MLflow' if ev.from_upstream else 'the gateway'}:"
                                 f" {body[:120]!r}")


# --- MLflow's auth app and the gateway's identity assertion ---------------------------

ASSERTION_CAUSES = (
    # (what the plugin's message says, the likely cause and fix)
    ("missing", "the gateway forwarded no identity assertion: the filter's identity_assertion section "
                "(signing_key_env, kid) is not configured, or something between the gateway and MLflow "
                "drops the header, or MLflow's HOKUSAI_IDENTITY_HEADER names another header"),
    ("unknown key id", "the gateway signs with a kid that is not in MLflow's HOKUSAI_IDENTITY_JWKS: add the "
                       "gateway's public key to that JWKS and restart MLflow (on rotation MLflow must have the "
                       "new key before the gateway switches), or set identity_assertion.kid to a key it has"),
    ("bad signature", "the kid is in MLflow's JWKS but the gateway's private key (identity_assertion."
                      "signing_key_env) is not that key's pair: give the gateway the PEM that `keys new` made "
                      "with that JWKS entry, or MLflow the JWKS of the gateway's key"),
    ("another audience", "the gateway's identity_assertion.audience (or a route rule's) differs from MLflow's "
                         "HOKUSAI_IDENTITY_AUDIENCE: make them the same"),
    ("another issuer", "the gateway's identity_assertion.issuer differs from MLflow's HOKUSAI_IDENTITY_ISSUER: "
                       "make them the same"),
    ("expired", "the assertion was already expired when MLflow checked it: the gateway's and MLflow's clocks "
                "differ by more than the token's lifetime plus 30 s (run NTP on both)"),
    ("in the future", "the gateway's clock is ahead of MLflow's by more than 30 s: run NTP on both"),
    ("lives longer", "the gateway mints assertions living longer than MLflow accepts (15 minutes): lower "
                     "identity_assertion.ttl_seconds to at most 900"),
)


def assertion_refused(message: str) -> Diagnosis:
    """MLflow's Hokusai plugin refused the gateway's identity assertion (its
    401 `UNAUTHENTICATED`, `WWW-Authenticate: HokusaiIdentity`); its message
    says why."""
    for words, cause in ASSERTION_CAUSES:
        if words in message:
            return Diagnosis("identity assertion", f"MLflow refused the gateway's identity assertion "
                                                   f"({message!r}): {cause}")
    return Diagnosis("identity assertion", f"MLflow refused the gateway's identity assertion ({message!r}): "
                                           "the gateway's identity_assertion settings and MLflow's "
                                           "HOKUSAI_IDENTITY_* settings do not match; see mlflow-plugin/README.md")


def no_auth_app(what: str) -> Diagnosis:
    return Diagnosis("MLflow auth app", f"MLflow answers 404 for {what}: it runs without its auth app, so it "
                                        "cannot tell users apart and any key that may write can change or "
                                        "delete anyone's experiments and models; run `mlflow server --app-name "
                                        "hokusai-auth` with the Hokusai plugin (pip install ./mlflow-plugin, "
                                        "MLFLOW_AUTH_CONFIG_PATH, HOKUSAI_IDENTITY_JWKS): docs/deployment.md, "
                                        "\"The identity assertion\", and mlflow-plugin/README.md")
