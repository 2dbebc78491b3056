"""The key was sent and the filter says it is missing: where it got lost.

The verifier sends the key as the MLflow client does (`Authorization:
Bearer`, from MLFLOW_TRACKING_TOKEN). When the filter answers `missing` to
that, something took the header away before the filter saw it (a load
balancer, a CDN, a WAF, a front proxy), or the gateway does not read Bearer
(its `credentials.sources`). Two more requests to the same path tell these
apart:

- the key in `X-API-Key` only (the filter reads it too): whether the key
  reaches the filter at all, and works;
- `Authorization` with a scheme no Hokusai key uses, and no key in it: the
  filter answers `unsupported_scheme` when the header reaches it, `missing`
  when it does not. It proves the header is dropped without sending the key
  in it again.
"""

from __future__ import annotations

from .diagnose import Diagnosis, diagnose
from .probe import Evidence, Target, fetch

# A scheme the filter does not know: it answers `unsupported_scheme` for it.
PROBE_AUTHORIZATION = "HokusaiVerifyProbe no-key-here"


def forward(headers: str) -> str:
    return (f"configure that layer to forward {headers} to the gateway (a CloudFront distribution forwards "
            "Authorization only when its cache policy includes it; a proxy must not remove or overwrite it: "
            "Envoy's request_headers_to_remove, nginx's proxy_set_header Authorization \"\")")


NO_CLIENT_WORKAROUND = ("the unmodified MLflow client sends the key only in Authorization (MLFLOW_TRACKING_TOKEN "
                        "as Bearer, MLFLOW_TRACKING_USERNAME/PASSWORD as Basic: the same header), and cannot send "
                        "X-API-Key, so nothing on the client side works around it")


def why_lost(t: Target, path: str) -> Diagnosis:
    """The diagnosis for a Bearer key the filter answered `missing` to at
    `path` (below the origin)."""
    probe = fetch(t, path, headers={"Authorization": PROBE_AUTHORIZATION})
    arrives = probe.marker == "unsupported_scheme"  # the Authorization header reaches the filter
    alt = fetch(t, path, headers={"X-API-Key": t.token})
    # Passed by the filter: its whoami answer, or what the upstream answered.
    works = alt.status == 200 and alt.marker in ("whoami", None)
    also_missing = alt.marker == "missing"

    if arrives:
        # The header arrives; the filter takes no key from Bearer: not read.
        if works:
            return Diagnosis("key", "the gateway does not read the key from Authorization: Bearer (it works in "
                                    "X-API-Key, and an Authorization header reaches the filter): add bearer (and "
                                    "basic) to the filter's credentials.sources; the MLflow client sends "
                                    "MLFLOW_TRACKING_TOKEN as Bearer")
        if also_missing:
            return Diagnosis("key", "the gateway reads the key neither from Authorization: Bearer nor from "
                                    "X-API-Key (an Authorization header reaches the filter, the key in either "
                                    "is missing to it): add bearer and basic to the filter's "
                                    "credentials.sources; the MLflow client sends MLFLOW_TRACKING_TOKEN as Bearer")
        return also(Diagnosis("key", "the gateway does not read the key from Authorization: Bearer (an "
                                     "Authorization header reaches the filter): add bearer (and basic) to the "
                                     "filter's credentials.sources"), alt, t)

    dropped = ("something between this machine and the gateway (a load balancer, a CDN, a WAF or a front proxy) "
               "drops the Authorization header: the filter sees none")
    if works:
        return Diagnosis("front proxy", f"{dropped}, while the same key sent as X-API-Key reaches it and works; "
                                        f"{forward('the Authorization header')}; {NO_CLIENT_WORKAROUND}")
    if also_missing:
        return Diagnosis("front proxy", "something between this machine and the gateway (a load balancer, a CDN, "
                                        "a WAF or a front proxy, or a route in front of the filter) drops the "
                                        "credential headers: the filter sees neither Authorization nor X-API-Key; "
                                        f"{forward('Authorization (and X-API-Key)')}; {NO_CLIENT_WORKAROUND}")
    return also(Diagnosis("front proxy", f"{dropped}; {forward('the Authorization header')}; "
                                         f"{NO_CLIENT_WORKAROUND}"), alt, t)


def also(first: Diagnosis, alt: Evidence, t: Target) -> Diagnosis:
    """`first`, and what the key sent as X-API-Key got."""
    then = diagnose(alt, t)
    return Diagnosis(first.layer, f"{first.fix}; and the key sent as X-API-Key instead: {then.layer}: {then.fix}")
