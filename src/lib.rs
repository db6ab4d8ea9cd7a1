//! session-authz: an Envoy external-authorization gRPC service for session cookies.
//!
//! Data flows one way: a `CheckRequest` ([`ext_authz`]) → the credential in its headers
//! ([`credential`]) → the auth service's verdict ([`validator`], the only outbound I/O) → the
//! decision ([`decision`], pure) → the `CheckResponse` ([`response`]). [`config`] and [`cli`]
//! build the settings, [`app`] binds and serves, [`ops`] holds health, readiness and reflection,
//! and [`probe`] asks the validator while it is down, so health comes back without Checks.

#![forbid(unsafe_code)]

pub mod app;
pub mod cache;
pub mod cli;
pub mod config;
pub mod credential;
pub mod decision;
pub mod ext_authz;
pub mod metrics;
pub mod ops;
pub mod probe;
pub mod response;
pub mod telemetry;
pub mod validator;
