# session-authz container image.
#
#   docker build -t session-authz:0.1.0 .
#
# Two stages: a Rust toolchain builds the release binary, a distroless image (glibc and libgcc,
# no shell, no package manager) runs it as a non-root user. The build needs no protoc: build.rs
# compiles the protos with protox, a pure-Rust compiler, from the envoy-types crate.

# Same Debian release (bookworm, glibc 2.36) as the runtime image below, so the binary's glibc
# symbols are all there at run time.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when the manifest, the lock file,
# the build script or the protos change, not on every source edit. The placeholder sources are
# just enough for cargo to build every dependency (and run build.rs) once. cargo reads the
# manifest of every workspace member, the test harness included, though it builds none of it.
COPY Cargo.toml Cargo.lock build.rs ./
COPY testkit/Cargo.toml ./testkit/
COPY proto ./proto
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin session-authz \
    && rm -rf src

# The real sources. `touch` makes them newer than the placeholder build, whatever mtime COPY
# gave them, so cargo rebuilds this crate (only this crate).
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin session-authz \
    && install -D -m 0755 target/release/session-authz /out/session-authz

# cc: glibc and libgcc_s, which the Rust binary links against; nothing else. TLS roots are built
# into the binary (rustls with webpki roots), so no CA bundle is needed from the image.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="session-authz" \
      org.opencontainers.image.description="Envoy external-authorization gRPC service for session cookies" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /out/session-authz /usr/local/bin/session-authz

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd
# (65532 is distroless' "nonroot").
USER 65532:65532

# Structured logs for a log pipeline; every other setting keeps its default (see README) and is
# overridden by environment, a TOML file (SESSION_AUTHZ_CONFIG) or flags.
ENV SESSION_AUTHZ_LOG_FORMAT=json

# 9001: gRPC (envoy.service.auth.v3.Authorization, grpc.health.v1.Health, reflection).
# 9002: ops HTTP (/healthz, /readyz, /metrics). Both bind 0.0.0.0 unless configured otherwise.
EXPOSE 9001 9002

# SIGTERM (the default) drains: health NOT_SERVING, in-flight Checks finish within
# SESSION_AUTHZ_SHUTDOWN_GRACE (10s), exit 0. Exec form, so the binary is PID 1 and gets it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/session-authz"]
