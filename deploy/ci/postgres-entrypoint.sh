#!/bin/sh
# Entrypoint of the CI-only PostgreSQL stand-in (see postgres.Containerfile): create the
# cluster on first start from POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, like the
# official image, then run the server in the foreground as the `postgres` user.
set -eu

if [ "$(id -u)" = 0 ]; then
    # Named volumes arrive owned by root; the server refuses a data directory it cannot own.
    install -d -o postgres -g postgres -m 0700 "$PGDATA"
    install -d -o postgres -g postgres -m 2775 /run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres stand-in: POSTGRES_PASSWORD must be set" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --pgdata="$PGDATA" --username="$user" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 >/dev/null
    rm -f "$pwfile"
    # Other containers connect over the network, always with the password.
    printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' \
        >> "$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        # Listen on the socket only while the database is created.
        pg_ctl --pgdata="$PGDATA" --options="-c listen_addresses=''" --wait start >/dev/null
        createdb --host=/run/postgresql --username="$user" "$db"
        pg_ctl --pgdata="$PGDATA" --mode=fast --wait stop >/dev/null
    fi
fi

if [ "${1:-}" = postgres ]; then
    shift
    exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
fi
exec "$@"
