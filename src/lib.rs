//! session-authz: an external-authorization service for session cookies, for Envoy and others.
//!
//! Data flows one way (docs/architecture.md, "Layers"; `tests/layers.rs` checks the imports): a
//! door ([`doors`]) turns a proxy's question into a [`request::RequestView`] → the core
//! ([`authorize`]) reads the route's rules ([`policy`], pure), finds the credential
//! ([`credential`], pure) → refuses a cross-site request ([`csrf`], pure) → asks the cache
//! ([`cache`]) or the validator ([`validator`], the only outbound I/O), whose answer
//! [`contract`] reads (pure) → checks the identity against the route's rules → applies the
//! decision table ([`decision`], pure), sending browsers to sign in ([`signin`], pure) → the door
//! turns the [`authorize::Checked`] back into its protocol. [`config`] and [`cli`] build the
//! settings, [`app`] binds and serves, [`listener`] is the plain-HTTP accept loop, [`health`] and
//! [`probe`] follow the validator, [`ops`] serves health, readiness, metrics and reflection,
//! [`metrics`] and [`telemetry`] tell operators what happens, [`throttle`] keeps a repeated
//! failure to one log line per interval, [`timers`] keeps the runtime's timer wheel from waking
//! for each request's deadline.

#![forbid(unsafe_code)]

pub mod app;
pub mod assertion;
pub mod authorize;
pub mod cache;
pub mod cli;
pub mod config;
pub mod contract;
pub mod credential;
pub mod csrf;
pub mod decision;
pub mod doors;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod ops;
pub mod policy;
pub mod probe;
pub mod reload;
pub mod request;
pub mod revoke;
pub mod signin;
pub mod telemetry;
pub mod throttle;
pub mod timers;
pub mod validator;
