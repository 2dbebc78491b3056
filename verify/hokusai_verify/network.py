"""The layers under HTTP: the name, the connection, the certificate."""

from __future__ import annotations

import socket
import ssl

from .diagnose import Diagnosis
from .probe import Target


class Failed(Exception):
    """A step failed; carries its diagnosis."""

    def __init__(self, detail: str, diagnosis: Diagnosis):
        super().__init__(detail)
        self.diagnosis = diagnosis


def dns(t: Target) -> str:
    try:
        infos = socket.getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise Failed(f"{t.host}: {e.strerror}", Diagnosis("DNS", f"{t.host} does not resolve: check the host "
                                                                  "name in the tracking URI and DNS")) from e
    addresses = sorted({info[4][0] for info in infos})
    return ", ".join(addresses)


def tcp(t: Target) -> str:
    try:
        with socket.create_connection((t.host, t.port), timeout=t.remaining(10)) as s:
            return f"connected to {s.getpeername()[0]}:{t.port}"
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise Failed(f"{t.host}:{t.port}: {why}", Diagnosis(
            "TCP", f"nothing accepts connections at {t.host}:{t.port}: wrong port, the gateway is down, or "
                   "a firewall drops the connection")) from e


def tls(t: Target) -> str:
    """The handshake with the tracking URI's host as SNI and the name checked."""
    ctx = ssl.create_default_context(cafile=t.verify if isinstance(t.verify, str) else None)
    if t.verify is False:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((t.host, t.port), timeout=t.remaining(10)) as raw:
            with ctx.wrap_socket(raw, server_hostname=t.host) as s:
                cert = s.getpeercert() or {}
                return f"{s.version()}, certificate for {', '.join(names(cert)) or '?'}"
    except ssl.SSLCertVerificationError as e:
        raise Failed(e.verify_message or str(e), cert_problem(e, t)) from e
    except (ssl.SSLError, OSError) as e:
        raise Failed(str(e), Diagnosis("TLS", f"no TLS handshake with {t.host}:{t.port} ({e}): is the port "
                                              "HTTPS? (use http:// for a plain-HTTP gateway)")) from e


def names(cert: dict) -> list[str]:
    return [v for k, v in cert.get("subjectAltName", ()) if k in ("DNS", "IP Address")]


def presented_names(t: Target) -> list[str]:
    """The names on the certificate the server presents, trusted or not."""
    ctx = ssl.create_default_context(cafile=t.verify if isinstance(t.verify, str) else None)
    ctx.check_hostname = False
    try:
        with socket.create_connection((t.host, t.port), timeout=t.remaining(10)) as raw:
            with ctx.wrap_socket(raw, server_hostname=t.host) as s:
                return names(s.getpeercert() or {})
    except (ssl.SSLError, OSError):
        return []


def cert_problem(e: ssl.SSLCertVerificationError, t: Target) -> Diagnosis:
    # 62: a host name the certificate does not name; 64: an IP address.
    if e.verify_code in (62, 64) or "mismatch" in str(e):
        presented = presented_names(t) or ["(names not readable)"]
        return Diagnosis("TLS", f"the certificate is for {', '.join(presented)}, not {t.host}: serve a "
                                f"certificate that names {t.host}, or use a host name it names")
    return Diagnosis("TLS", f"the certificate is not trusted ({e.verify_message}): pass --ca-file with the "
                            "CA that signed it, or fix the chain the gateway serves")
