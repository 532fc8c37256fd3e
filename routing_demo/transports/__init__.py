"""Which kombu transport a broker URL gets, chosen on purpose rather than by kombu's guess.

The py-amqp transports are kombu's, with a connection that knows when RabbitMQ
blocks publishers (:mod:`routing_demo.transports.pyamqp`). kombu picks the
transport from the URL's scheme, with one surprise: a plain
``amqp://`` URL switches to librabbitmq whenever the ``librabbitmq`` module
is importable (``kombu.connection.Connection._init_params``), and kombu's own
librabbitmq transport cannot consume with kombu 5.7. Celery's
``broker_transport`` setting (kombu's ``transport`` argument) wins over the
scheme, so setting it from the URL makes the choice explicit:

=====================  ==========================================================
URL scheme             transport used
=====================  ==========================================================
``librabbitmq://``     :data:`LIBRABBITMQ_TRANSPORT`, kombu's librabbitmq transport
                       with the adapter of :mod:`routing_demo.transports.librabbitmq`
``amqp://``            :data:`PYAMQP_TRANSPORT`, py-amqp, even when librabbitmq is
                       installed
``pyamqp://``          :data:`PYAMQP_TRANSPORT` (kombu never switches this one)
``amqps://``           :data:`PYAMQP_TLS_TRANSPORT`, py-amqp over TLS
anything else          kombu's choice from the scheme (``redis://``, …)
=====================  ==========================================================

Nothing here imports librabbitmq: the adapter module is loaded by kombu only
when a connection uses it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from kombu import connection as kombu_connection

__all__ = [
    "LIBRABBITMQ_TRANSPORT",
    "PYAMQP_TLS_TRANSPORT",
    "PYAMQP_TRANSPORT",
    "broker_transport_for",
]

#: The ``broker_transport`` value (a class path, which kombu resolves with
#: ``symbol_by_name``) for librabbitmq with the kombu 5.7 adapter.
LIBRABBITMQ_TRANSPORT = "routing_demo.transports.librabbitmq:Transport"
#: kombu's pure-Python py-amqp transport, knowing when RabbitMQ blocks
#: publishers (:mod:`routing_demo.transports.pyamqp`).
PYAMQP_TRANSPORT = "routing_demo.transports.pyamqp:Transport"
#: The same over TLS.
PYAMQP_TLS_TRANSPORT = "routing_demo.transports.pyamqp:SSLTransport"

# kombu shows a connection's URL ("Connected to amqp://…") with its transport's
# alias: ours are py-amqp's, and show as py-amqp's do.
kombu_connection.resolve_aliases.setdefault(PYAMQP_TRANSPORT, "amqp")
kombu_connection.resolve_aliases.setdefault(PYAMQP_TLS_TRANSPORT, "amqps")

#: URL scheme -> the transport that scheme must get.
_TRANSPORT_BY_SCHEME = {
    "librabbitmq": LIBRABBITMQ_TRANSPORT,
    "amqp": PYAMQP_TRANSPORT,
    "pyamqp": PYAMQP_TRANSPORT,
    "amqps": PYAMQP_TLS_TRANSPORT,
    "pyamqps": PYAMQP_TLS_TRANSPORT,
}


def broker_transport_for(url: str | None) -> str | None:
    """The ``broker_transport`` setting for ``url``, or ``None`` to let kombu
    choose from the scheme.

    Only the first URL of a failover list (``amqp://a;amqp://b``) is looked
    at: kombu uses one transport for all of them.

    >>> broker_transport_for("librabbitmq://guest:guest@localhost:5672//")
    'routing_demo.transports.librabbitmq:Transport'
    >>> broker_transport_for("amqp://guest:guest@localhost:5672//")
    'routing_demo.transports.pyamqp:Transport'
    >>> broker_transport_for("redis://localhost:6379/0") is None
    True
    """
    if not url or "://" not in url:
        return None
    first = url.split(";", 1)[0].strip()
    return _TRANSPORT_BY_SCHEME.get(urlsplit(first).scheme.lower())
