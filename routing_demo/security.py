"""Broker credentials and TLS settings, read from the environment.

The broker password may live in a file (a Docker or Kubernetes secret)
instead of ``CELERY_BROKER_URL``: see ``broker_password_from_file``.

TLS, for the ``amqps://`` profile (``conf/tls.py``):

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
from urllib.parse import urlsplit

__all__ = [
    "BROKER_PASSWORD_FILE",
    "TLS_CA_CERTS",
    "TLS_CERTFILE",
    "TLS_KEYFILE",
    "TLS_SERVER_HOSTNAME",
    "broker_password_from_file",
    "broker_tls_options",
]

#: A file holding the broker password; ``CELERY_BROKER_URL`` then names the
#: user but no password (``pyamqp://routing_demo@rabbitmq:5672/routing_demo``).
BROKER_PASSWORD_FILE = "ROUTING_DEMO_BROKER_PASSWORD_FILE"

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


def broker_password_from_file(
    broker_url: str, environ: Mapping[str, str] | None = None
) -> str | None:
    """The password in the file ``BROKER_PASSWORD_FILE`` names, without its
    trailing newline; ``None`` when the variable is unset.

    Celery hands it to kombu as ``broker_password``, which kombu uses only
    when the URL carries no password: a URL with one would win silently, so
    that is refused here, as are a missing or empty file.
    """
    environ = os.environ if environ is None else environ
    path = environ.get(BROKER_PASSWORD_FILE) or None
    if path is None:
        return None
    if urlsplit(broker_url.split(";")[0].strip()).password is not None:
        raise ValueError(
            f"{BROKER_PASSWORD_FILE} is set but the broker URL carries a password too: "
            "give CELERY_BROKER_URL without one (scheme://user@host:port/vhost)"
        )
    try:
        password = Path(path).read_text().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"{BROKER_PASSWORD_FILE}={path}: {exc.strerror}") from None
    if not password:
        raise ValueError(f"{BROKER_PASSWORD_FILE}={path}: the file is empty")
    return password
