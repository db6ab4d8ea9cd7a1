//! The doors through which proxies ask: each converts its protocol to the core's
//! [`crate::authorize::RequestView`], calls the core, and converts the decision back.

pub mod grpc;
