#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time: FUZZ_SECONDS each (default 60).
# cargo-fuzz is installed pinned into .tools/cargo; RUSTC_BOOTSTRAP=1 lets the machine's stable
# toolchain accept the sanitizer flags cargo-fuzz passes. New inputs land in fuzz/corpus/
# (git-ignored), crashes in fuzz/artifacts/; the committed seeds are in fuzz/seeds/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
seconds="${FUZZ_SECONDS:-60}"
cargo_fuzz="$root/.tools/cargo/bin/cargo-fuzz"
if [[ ! -x "$cargo_fuzz" ]]; then
  cargo install cargo-fuzz --locked --version 0.13.1 --root "$root/.tools/cargo"
fi
export PATH="$root/.tools/cargo/bin:$PATH" RUSTC_BOOTSTRAP=1
cd fuzz
for target in credential validator_answer check_request; do
  mkdir -p "corpus/$target"
  echo "fuzzing $target for ${seconds}s" >&2
  cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len=16384 -print_final_stats=1
done
