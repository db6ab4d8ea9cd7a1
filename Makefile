# The README's two commands: `make demo` runs the stack, `make test` runs every test (CI too).
.PHONY: demo test tools lint

demo:
	./scripts/demo.sh

test: tools lint
	cargo test --locked --all-targets

tools:
	./scripts/install-tools.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings
