# The README's two commands: `make demo` runs the stack, `make test` runs every test (CI too).
# `make check` is the edit loop's tier: no external tool, a minute or two once built.
.PHONY: demo test check tools lint bench chaos fuzz

demo:
	./scripts/demo.sh

test: tools lint
	# The examples first: the Envoy tests run the sample sign-in page (examples/sample_validator.rs).
	cargo build --locked --bins --examples
	cargo test --locked --workspace --all-targets
	CHAOS_SECONDS=$${CHAOS_SECONDS:-60} ./target/debug/examples/chaos

# fmt, clippy, the unit tests and the tests that run the service in-process or as its own
# binary against fakes on loopback: no Envoy, proxy, grpcurl or deploy tool.
CHECK_TESTS := layers check properties cache faults forward_auth config_starts ops_port otel process tls
check: lint
	cargo test --locked --workspace --lib --bins
	cargo test --locked $(addprefix --test ,$(CHECK_TESTS))

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
