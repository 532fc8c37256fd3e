"""TLS settings for the ``amqps://`` profile (``conf/tls.py``), read from the environment.

``broker_use_ssl`` is handed by kombu to py-amqp, which wraps the socket in
an ``ssl.SSLContext``: ``ca_certs`` is the CA the broker's certificate must
chain to, ``cert_reqs=CERT_REQUIRED`` makes that check mandatory, and
``server_hostname`` turns on hostname verification (py-amqp checks the
hostname only when one is given; ``None`` asks kombu for the broker URL's
host). ``certfile``/``keyfile`` present a client certificate, for brokers
that require one (mutual TLS).

Nothing here connects; a wrong combination is a ``ValueError`` when the
profile loads, not a handshake error later.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "TLS_CA_CERTS",
    "TLS_CERTFILE",
    "TLS_KEYFILE",
    "TLS_SERVER_HOSTNAME",
    "broker_tls_options",
]

#: PEM file of the CA that signed the broker's certificate (``scripts/make-certs``
#: writes ``ca.pem``); unset: the system's trusted CAs.
TLS_CA_CERTS = "ROUTING_DEMO_TLS_CA_CERTS"
#: Client certificate (PEM) for mutual TLS; needs ``TLS_KEYFILE`` too.
TLS_CERTFILE = "ROUTING_DEMO_TLS_CERTFILE"
#: The client certificate's private key (PEM).
TLS_KEYFILE = "ROUTING_DEMO_TLS_KEYFILE"
#: The name the broker's certificate must carry; unset: the broker URL's host.
TLS_SERVER_HOSTNAME = "ROUTING_DEMO_TLS_SERVER_HOSTNAME"


def _existing_file(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name) or None
    if value is not None and not Path(value).is_file():
        raise ValueError(f"{name}={value}: no such file")
    return value


def broker_tls_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``broker_use_ssl`` for py-amqp: certificate and hostname verification
    always on, files and the expected hostname from ``environ`` (default:
    ``os.environ``)."""
    environ = os.environ if environ is None else environ
    certfile = _existing_file(environ, TLS_CERTFILE)
    keyfile = _existing_file(environ, TLS_KEYFILE)
    if bool(certfile) != bool(keyfile):
        raise ValueError(
            f"set both {TLS_CERTFILE} and {TLS_KEYFILE} (a client certificate and its key), "
            "or neither"
        )
    options: dict[str, Any] = {
        "ca_certs": _existing_file(environ, TLS_CA_CERTS),
        "cert_reqs": ssl.CERT_REQUIRED,
        # None: kombu fills in the broker URL's host before connecting.
        "server_hostname": environ.get(TLS_SERVER_HOSTNAME) or None,
        "tls_minimum_version": ssl.TLSVersion.TLSv1_2,
    }
    if certfile:
        options.update(certfile=certfile, keyfile=keyfile)
    return options
