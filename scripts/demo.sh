#!/usr/bin/env bash
# The demo: the admin dashboard behind Envoy and session-authz, all on loopback.
# Installs the pinned Envoy, builds, starts the sample validator (seed sessions user1-token and
# user2-token), the sample dashboard, session-authz and Envoy with envoy/envoy.yaml, prints the
# requests to try, and stops everything it started on Ctrl-C.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

./scripts/install-tools.sh
cargo build --locked --release --bin session-authz --example sample_validator --example sample_dashboard

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "demo stopped"
}
trap cleanup EXIT
trap 'cleanup; exit 0' INT TERM

wait_for() { # url
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "demo: $1 did not come up" >&2
  exit 1
}

# The signed identity assertion: a new Ed25519 key each run (scripts/assertion-key.py, with the
# tools' Python; `openssl genpkey -algorithm ed25519` writes the same), and the dashboard
# verifying every admin page's assertion against session-authz's JWKS.
mkdir -p target/demo
.tools/venv/bin/python scripts/assertion-key.py ed25519 target/demo/assertion.pem

target/release/examples/sample_validator 127.0.0.1:5000 &
pids+=($!)
target/release/examples/sample_dashboard 127.0.0.1:8000 \
  --jwks http://127.0.0.1:9002/.well-known/jwks.json --audience dashboard &
pids+=($!)
AIMENU_URL=http://127.0.0.1:5000 \
SESSION_AUTHZ_LOGIN_URL=/login \
SESSION_AUTHZ_ASSERTION_KEY=target/demo/assertion.pem \
SESSION_AUTHZ_ASSERTION_AUDIENCE=dashboard \
SESSION_AUTHZ_GRPC_ADDR=127.0.0.1:9001 \
SESSION_AUTHZ_HTTP_ADDR=127.0.0.1:9002 \
SESSION_AUTHZ_DRAIN_DELAY=0 \
RUST_LOG="${RUST_LOG:-info,session_authz=debug}" \
  target/release/session-authz &
pids+=($!)
wait_for http://127.0.0.1:9002/readyz
# The access log (stdout) is flushed every 0.5 s rather than Envoy's default 10 s, for watching.
.tools/bin/envoy -c envoy/envoy.yaml --disable-hot-restart --concurrency 2 -l warning \
  --file-flush-interval-msec 500 &
pids+=($!)
wait_for http://127.0.0.1:9901/ready

cat <<'MSG'

The admin dashboard is behind Envoy on http://localhost:8080 (session-authz checks every
/admin request against the sample validator). Open http://localhost:8080/admin/settings in a
browser (sign in as user1, an admin, or user2, a viewer), or try:

  curl -i localhost:8080/admin                                   # 401, no session
  curl -i -H 'Accept: text/html' localhost:8080/admin/settings   # 302 to the sign-in page
  curl -i -b session=user1-token localhost:8080/admin            # 200, "hello, user1! ... admin", assertion verified, set-cookie renews
  curl -i -H 'x-auth-user: root' -H 'x-auth-roles: admin' localhost:8000/admin   # 401: past Envoy, no signed assertion
  curl -s localhost:9002/.well-known/jwks.json                   # the keys the dashboard verifies with
  curl -i -H 'X-Session-Token: user2-token' -H 'x-auth-roles: admin' \
    localhost:8080/api/admin/stats                               # 200, user2, roles: viewer
  curl -i -b session=stolen localhost:8080/admin                 # 401, invalid session, cookie cleared
  curl -i -b session=user1-token -d '' -H 'Origin: https://evil.example' localhost:8080/admin   # 403, cross-site
  curl -i -H 'x-auth-user: root' localhost:8080/                 # public page, forged header dropped

  .tools/bin/grpcurl -plaintext 127.0.0.1:9001 list              # session-authz by reflection
  curl -s localhost:9901/clusters | grep session_authz           # Envoy's health check of it

Envoy's access log (one JSON line per request: user, roles, reason, cache) appears here.
Ctrl-C stops everything.
MSG
wait
