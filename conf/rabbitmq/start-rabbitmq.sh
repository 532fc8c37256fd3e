#!/bin/sh
# Start the official RabbitMQ image with the routing_demo topology and one
# application user taken from the environment (never guest: the image lets
# guest log in from the network). Runs as the image's entrypoint, as root,
# before it drops to the rabbitmq user.
#
#   RABBITMQ_USER            the application user (required)
#   RABBITMQ_PASSWORD        its password, or
#   RABBITMQ_PASSWORD_FILE   a file holding it (a Docker secret: /run/secrets/…)
#   RABBITMQ_ERLANG_COOKIE_FILE
#                            optional: a file holding the Erlang cookie (a Docker
#                            secret), installed as the rabbitmq user's
#                            .erlang.cookie, mode 400, before the node starts.
#                            Every node of a cluster, and every CLI tool that
#                            talks to one, must hold the same cookie.
#
# The user gets the least-privilege permissions generated from the topology
# (permissions.json: `celery -A routing_demo routes permissions`) in the
# routing_demo vhost, and the "management" tag only: it may read its own
# vhost through the management API (`routes verify`), and administers
# nothing. Administer the broker with `rabbitmqctl` inside the container.
#
# ROUTING_DEMO_RABBITMQ_CONF (default /etc/rabbitmq),
# ROUTING_DEMO_RABBITMQ_HOME (default /var/lib/rabbitmq, where the image's
# rabbitmq user and root's CLI tools read .erlang.cookie) and
# ROUTING_DEMO_RABBITMQ_EXEC (default docker-entrypoint.sh rabbitmq-server)
# exist so the script can be run outside the image.
set -eu

conf=${ROUTING_DEMO_RABBITMQ_CONF:-/etc/rabbitmq}
home=${ROUTING_DEMO_RABBITMQ_HOME:-/var/lib/rabbitmq}
vhost=routing_demo
definitions=$conf/definitions.d

: "${RABBITMQ_USER:?set RABBITMQ_USER}"
if [ -n "${RABBITMQ_PASSWORD_FILE:-}" ]; then
    if [ -n "${RABBITMQ_PASSWORD:-}" ]; then
        echo "set RABBITMQ_PASSWORD or RABBITMQ_PASSWORD_FILE, not both" >&2
        exit 1
    fi
    # The file's content without its final newline.
    RABBITMQ_PASSWORD=$(cat "$RABBITMQ_PASSWORD_FILE")
fi
: "${RABBITMQ_PASSWORD:?set RABBITMQ_PASSWORD or RABBITMQ_PASSWORD_FILE}"

# The user file is JSON written by the shell: refuse what would need escaping.
case "$RABBITMQ_USER$RABBITMQ_PASSWORD" in
*'"'* | *'\'*)
    echo "RABBITMQ_USER and RABBITMQ_PASSWORD must not contain \" or \\" >&2
    exit 1
    ;;
esac

mkdir -p "$definitions"
cp "$conf/routing-demo-topology.json" "$definitions/20-topology.json"
# permissions.json is one JSON object, one pattern per line: keep those lines.
patterns=$(sed -e '1d' -e '$d' -e 's/^/    /' "$conf/routing-demo-permissions.json")
umask 077
cat >"$definitions/10-user.json" <<JSON
{
  "users": [{"name": "$RABBITMQ_USER", "password": "$RABBITMQ_PASSWORD", "tags": "management"}],
  "vhosts": [{"name": "$vhost"}],
  "permissions": [
    {
      "user": "$RABBITMQ_USER",
      "vhost": "$vhost",
$patterns
    }
  ]
}
JSON
chown -R rabbitmq:rabbitmq "$definitions"
chmod 0600 "$definitions/10-user.json"

if [ -n "${RABBITMQ_ERLANG_COOKIE_FILE:-}" ]; then
    # The file's content without its final newline; Erlang wants one line of
    # characters, and the node refuses a cookie file others can read.
    cookie=$(cat "$RABBITMQ_ERLANG_COOKIE_FILE")
    case "$cookie" in
    '' | *[!A-Za-z0-9]*)
        echo "RABBITMQ_ERLANG_COOKIE_FILE must hold letters and digits only (e.g. openssl rand -hex 32)" >&2
        exit 1
        ;;
    esac
    mkdir -p "$home"
    rm -f "$home/.erlang.cookie"
    printf '%s' "$cookie" >"$home/.erlang.cookie"
    chown rabbitmq:rabbitmq "$home/.erlang.cookie"
    chmod 0400 "$home/.erlang.cookie"
fi

# shellcheck disable=SC2086 # word splitting of the command is intended
exec ${ROUTING_DEMO_RABBITMQ_EXEC:-docker-entrypoint.sh rabbitmq-server}
