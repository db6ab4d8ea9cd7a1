# The README's two commands: `make demo` runs the stack, `make test` runs every test (CI too).
.PHONY: demo test tools lint bench

demo:
	./scripts/demo.sh

test: tools lint
	cargo test --locked --all-targets

tools:
	./scripts/install-tools.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings

# Benchmark (not part of `make test`): release build, then one run of every scenario.
bench: tools
	cargo build --locked --release --bins --examples
	./target/release/examples/bench
