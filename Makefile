# The README's two commands: `make demo` runs the stack, `make test` runs every test (CI too).
.PHONY: demo test tools lint bench chaos fuzz

demo:
	./scripts/demo.sh

test: tools lint
	# The examples first: the Envoy tests run the sample sign-in page (examples/sample_validator.rs).
	cargo build --locked --bins --examples
	cargo test --locked --workspace --all-targets
	CHAOS_SECONDS=$${CHAOS_SECONDS:-60} ./target/debug/examples/chaos

tools:
	./scripts/install-tools.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

# Benchmark (not part of `make test`): release build, then one run of every scenario.
bench: tools
	cargo build --locked --release --bins --examples
	./target/release/examples/bench

# Chaos and soak through real Envoy (10 minutes unless CHAOS_SECONDS says otherwise).
chaos: tools
	cargo build --locked --release --bins --examples
	CHAOS_SECONDS=$${CHAOS_SECONDS:-600} ./target/release/examples/chaos

# Every fuzz target for FUZZ_SECONDS each (default 60); see scripts/fuzz.sh.
fuzz:
	./scripts/fuzz.sh
