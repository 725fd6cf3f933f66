#!/usr/bin/env bash
# Schemathesis (v4) against a real `tlsrpt serve` on loopback: every operation of
# /openapi.json, every check, a bounded number of examples and a fixed seed (the same
# requests every run, so it can not flake), once per token scope. Any finding fails.
#
# Database: $TLSRPT_DATABASE_URL when set (it must be a database this run may write
# to), else the embedded PostgreSQL in a temporary data directory.
# Usage: deploy/ci/schemathesis.sh [extra schemathesis options]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
ST=${SCHEMATHESIS:-.venv/bin/schemathesis}
# The admin token reaches every operation: the full volume. The narrower scopes mostly
# meet 403s (documented, checked) and the operations they open: fewer examples.
EXAMPLES=${SCHEMATHESIS_EXAMPLES:-20}
SCOPE_EXAMPLES=${SCHEMATHESIS_SCOPE_EXAMPLES:-5}
SEED=${SCHEMATHESIS_SEED:-18}

work=$(mktemp -d /tmp/tlsrpt-schemathesis.XXXXXX)
# pgserver (as root) hands the data directory to its own user.
chmod 755 "$work"
server_pid=
dns_pid=
cleanup() {
    if [ -n "$dns_pid" ]; then kill "$dns_pid" 2>/dev/null || true; fi
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Nothing may leave the machine: DNS questions (the DNS check, report previews) go to a
# loopback server that answers NXDOMAIN to all.
"$PY" deploy/ci/nxdomain_dns.py >"$work/dns.port" &
dns_pid=$!
for _ in $(seq 50); do [ -s "$work/dns.port" ] && break; sleep 0.1; done
env_vars=(TLSRPT_LOG_LEVEL=WARNING TLSRPT_DATA_DIR="$work/data"
    TLSRPT_DNS__NAMESERVERS="127.0.0.1:$(head -n1 "$work/dns.port")")
if [ -n "${TLSRPT_DATABASE_URL:-}" ]; then
    env_vars+=(TLSRPT_DATABASE_URL="$TLSRPT_DATABASE_URL")
fi
port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"

env "${env_vars[@]}" "$PY" -m app serve --host 127.0.0.1 --port "$port" >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 240); do
    if curl -fs "$base/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then cat "$work/serve.log"; exit 1; fi
    sleep 0.5
done
curl -fs "$base/readyz" >/dev/null || { cat "$work/serve.log"; exit 1; }

token() {
    env "${env_vars[@]}" "$PY" -m app token create --name "schemathesis-$1" --scope "$1" | tail -n 1
}

status=0
for scope in ${SCHEMATHESIS_SCOPES:-admin ingest read}; do
    echo "== schemathesis with a token of scope $scope"
    bearer=$(token "$scope")
    examples=$EXAMPLES phases=examples,coverage,fuzzing,stateful
    if [ "$scope" != admin ]; then
        # The coverage phase walks every boundary of every operation whatever the token:
        # once, with admin, is enough.
        examples=$SCOPE_EXAMPLES phases=examples,fuzzing,stateful
    fi
    PYTHONPATH=deploy/ci SCHEMATHESIS_HOOKS=schemathesis_hooks "$ST" --config-file deploy/ci/schemathesis.toml run "$base/openapi.json" \
        --max-examples "$examples" \
        --phases "$phases" \
        --seed "$SEED" \
        --suppress-health-check all \
        --no-shrink \
        --workers 1 \
        --request-timeout 10 \
        --no-color \
        --header "Authorization: Bearer $bearer" \
        "$@" || status=1
done
if [ "$status" -ne 0 ]; then
    echo "schemathesis found problems; the server's log:"
    tail -n 50 "$work/serve.log"
fi
exit "$status"
