//! session-authz: an external-authorization service for session cookies, for Envoy and others.
//!
//! Data flows one way (docs/architecture.md): a door ([`doors`]) turns a proxy's question into a
//! [`authorize::RequestView`] → the core ([`authorize`]) finds the credential ([`credential`],
//! pure) → refuses a cross-site request ([`csrf`], pure) → asks the cache ([`cache`]) or the
//! validator ([`validator`], the only outbound I/O), whose answer [`contract`] reads (pure) →
//! applies the decision table ([`decision`], pure), sending browsers to sign in ([`signin`],
//! pure) → the door turns the [`decision::Decision`]
//! back into its protocol. [`config`] and [`cli`] build the settings, [`app`] binds and serves,
//! [`health`] and [`probe`] follow the validator, [`ops`] serves health, readiness, metrics and
//! reflection, [`metrics`] and [`telemetry`] tell operators what happens, [`timers`] keeps the
//! runtime's timer wheel from waking for each request's deadline.

#![forbid(unsafe_code)]

pub mod app;
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
pub mod request;
pub mod signin;
pub mod telemetry;
pub mod throttle;
pub mod timers;
pub mod validator;
