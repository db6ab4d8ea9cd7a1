//! The one test harness of session-authz, split by job and shared by the integration tests, the
//! benchmark and the chaos run (examples may use dev-dependencies).
//!
//! Everything runs for real on 127.0.0.1 ephemeral ports: the service in-process or as its binary,
//! a scriptable fake auth service, the pinned Envoy, raw HTTP clients and upstreams. Every process
//! or server started here stops when its handle drops, and waits are on conditions
//! ([`wait::eventually`]), never fixed sleeps.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod check;
pub mod dockerfile;
pub mod envoy;
pub mod forward_auth;
pub mod http;
pub mod manifests;
pub mod otlp;
pub mod process;
pub mod procfs;
pub mod proxies;
pub mod service;
pub mod validator;
pub mod verdicts;
pub mod wait;
