"""The ``amqps://`` profile: ``routing_demo.conf.celeryconfig``'s settings, with
the broker reached over TLS, its certificate and hostname verified.

Select it with ``CELERY_CONFIG_MODULE=routing_demo.conf.tls`` and give the
broker as ``CELERY_BROKER_URL=amqps://user:password@host:5671/vhost``. ``amqps://``
is py-amqp over TLS (kombu's ``SSLTransport``): unlike plain ``amqp://`` it
never switches to librabbitmq, which has no TLS.

Environment (``routing_demo.security``):

- ``ROUTING_DEMO_TLS_CA_CERTS``: the CA the broker's certificate must chain to
  (``scripts/make-certs DIR`` writes ``DIR/ca.pem``); unset: the system's CAs.
- ``ROUTING_DEMO_TLS_CERTFILE`` and ``ROUTING_DEMO_TLS_KEYFILE``: a client
  certificate and key, for a broker that requires one (mutual TLS).
- ``ROUTING_DEMO_TLS_SERVER_HOSTNAME``: the name the certificate must carry;
  unset: the broker URL's host.
"""

from __future__ import annotations

from routing_demo.conf.celeryconfig import *  # noqa: F403
from routing_demo.security import broker_tls_options

#: Default only: ``CELERY_BROKER_URL`` wins. 5671 is RabbitMQ's TLS port.
broker_url = "amqps://localhost:5671//"
#: CA, client certificate and hostname checks: see the module docstring.
broker_use_ssl = broker_tls_options()
