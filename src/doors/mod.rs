//! The doors through which proxies ask: each converts its protocol to the core's
//! [`crate::authorize::RequestView`], calls the core, and converts the decision back.

pub mod grpc;

/// The request headers that carry a valid session's identity to the app: set with overwrite
/// when the validator named the field, removed when it did not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityHeaders {
    pub user: String,
    pub roles: String,
    pub email: String,
}

impl Default for IdentityHeaders {
    /// The `*_header` keys' defaults.
    fn default() -> Self {
        Self {
            user: "x-auth-user".to_owned(),
            roles: "x-auth-roles".to_owned(),
            email: "x-auth-email".to_owned(),
        }
    }
}
