//! The decision table (docs/architecture.md, "The decision table") as one pure function: what
//! was found and what the validator said in, allow or deny out.

use crate::contract::{ErrorKind, Identity, Verdict};
use crate::credential::Ambiguity;

/// Everything the decision depends on, gathered by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Situation {
    /// `AUTH_ENABLED=false`.
    AuthDisabled,
    /// The CheckRequest carried no HTTP attributes.
    Malformed,
    NoCredential,
    Ambiguous(Ambiguity),
    /// A cookie credential on a method that may change state, sent from another site (`csrf`).
    CrossSite,
    Checked(Verdict),
    /// The validator erred, but confirmed this session valid within `stale_if_error`.
    StaleValid(Identity),
    /// A valid session (fresh, cached or stale) whose identity fails the route's rules.
    Forbidden,
    /// The route's `context_extensions` hold an unknown key or a bad value.
    MisconfiguredRoute,
    /// A valid session whose signed identity assertion could not be made (`assertion_key`).
    Unsigned,
}

/// The HTTP status a denial shows the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyStatus {
    BadRequest,
    Unauthenticated,
    /// A request refused by a rule, whoever sent it.
    Forbidden,
    Unavailable,
    /// The route is misconfigured: no request can pass it until it is fixed.
    Misconfigured,
}

impl DenyStatus {
    pub fn http_code(self) -> u16 {
        match self {
            DenyStatus::BadRequest => 400,
            DenyStatus::Unauthenticated => 401,
            DenyStatus::Forbidden => 403,
            DenyStatus::Unavailable => 503,
            DenyStatus::Misconfigured => 500,
        }
    }
}

/// Why a decision was made: a stable label for logs (never a token or user).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    AuthDisabled,
    ValidSession,
    /// Allowed on a recent valid answer while the validator erred (`stale_if_error`).
    StaleSession,
    Malformed,
    NoCredential,
    Ambiguous(Ambiguity),
    /// Refused as a cross-site request (`csrf`), before any validator call.
    CrossSite,
    /// A valid session that fails the route's `require_roles` / `allow_users`.
    Forbidden,
    /// The route's settings cannot be read; refused before any validator call.
    MisconfiguredRoute,
    InvalidSession,
    ValidatorError(ErrorKind),
    /// The signed assertion an allow must carry could not be made.
    AssertionFailed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AuthDisabled => "auth_disabled",
            Reason::ValidSession => "valid_session",
            Reason::StaleSession => "stale_session",
            Reason::Malformed => "malformed_request",
            Reason::NoCredential => "no_credential",
            Reason::Ambiguous(a) => a.as_str(),
            Reason::CrossSite => "cross_site",
            Reason::Forbidden => "forbidden",
            Reason::MisconfiguredRoute => "misconfigured_route",
            Reason::InvalidSession => "invalid_session",
            Reason::ValidatorError(kind) => kind.as_str(),
            Reason::AssertionFailed => "assertion_failed",
        }
    }
}

/// What the core answers: allow, deny, or send to sign in. Each door turns it into its
/// protocol's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let the request through; the identity becomes the identity headers, or they are removed.
    Allow {
        identity: Identity,
        reason: Reason,
    },
    Deny {
        status: DenyStatus,
        reason: Reason,
    },
    /// A browser without a usable session sent to sign in: a 401 turned into a 302 to
    /// `location` ([`crate::signin`]).
    SignIn {
        location: String,
        reason: Reason,
    },
}

impl Decision {
    pub fn reason(&self) -> Reason {
        match self {
            Decision::Allow { reason, .. }
            | Decision::Deny { reason, .. }
            | Decision::SignIn { reason, .. } => *reason,
        }
    }

    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// The decision table (docs/architecture.md): the situation alone decides.
pub fn decide(situation: Situation) -> Decision {
    let deny = |status, reason| Decision::Deny { status, reason };
    match situation {
        Situation::AuthDisabled => Decision::Allow {
            identity: Identity::default(),
            reason: Reason::AuthDisabled,
        },
        Situation::Malformed => deny(DenyStatus::BadRequest, Reason::Malformed),
        Situation::NoCredential => deny(DenyStatus::Unauthenticated, Reason::NoCredential),
        Situation::Ambiguous(why) => deny(DenyStatus::Unauthenticated, Reason::Ambiguous(why)),
        Situation::CrossSite => deny(DenyStatus::Forbidden, Reason::CrossSite),
        Situation::Forbidden => deny(DenyStatus::Forbidden, Reason::Forbidden),
        Situation::MisconfiguredRoute => {
            deny(DenyStatus::Misconfigured, Reason::MisconfiguredRoute)
        }
        // Never an allow without the assertion the app expects; a failed signature is the
        // service's fault, and may pass (the RNG of a P-256 signature): 503.
        Situation::Unsigned => deny(DenyStatus::Unavailable, Reason::AssertionFailed),
        Situation::Checked(Verdict::Valid(identity)) => Decision::Allow {
            identity,
            reason: Reason::ValidSession,
        },
        Situation::StaleValid(identity) => Decision::Allow {
            identity,
            reason: Reason::StaleSession,
        },
        Situation::Checked(Verdict::Invalid) => {
            deny(DenyStatus::Unauthenticated, Reason::InvalidSession)
        }
        Situation::Checked(Verdict::Error(err)) => {
            deny(DenyStatus::Unavailable, Reason::ValidatorError(err.kind()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ValidatorError;

    #[test]
    fn a_valid_session_without_its_assertion_is_a_503() {
        assert_eq!(
            decide(Situation::Unsigned),
            Decision::Deny {
                status: DenyStatus::Unavailable,
                reason: Reason::AssertionFailed
            }
        );
    }

    #[test]
    fn row1_auth_disabled_allows_without_identity() {
        assert_eq!(
            decide(Situation::AuthDisabled),
            Decision::Allow {
                identity: Identity::default(),
                reason: Reason::AuthDisabled
            }
        );
    }

    #[test]
    fn row2_no_credential_is_401() {
        assert_eq!(
            decide(Situation::NoCredential),
            Decision::Deny {
                status: DenyStatus::Unauthenticated,
                reason: Reason::NoCredential
            }
        );
    }

    #[test]
    fn row3_valid_with_user() {
        assert_eq!(
            decide(Situation::Checked(Verdict::Valid(Identity::named("alice")))),
            Decision::Allow {
                identity: Identity::named("alice"),
                reason: Reason::ValidSession
            }
        );
    }

    #[test]
    fn row4_valid_without_user() {
        assert_eq!(
            decide(Situation::Checked(Verdict::Valid(Identity::default()))),
            Decision::Allow {
                identity: Identity::default(),
                reason: Reason::ValidSession
            }
        );
    }

    #[test]
    fn row5_invalid_is_401() {
        assert_eq!(
            decide(Situation::Checked(Verdict::Invalid)),
            Decision::Deny {
                status: DenyStatus::Unauthenticated,
                reason: Reason::InvalidSession
            }
        );
    }

    #[test]
    fn row6_validator_error_fails_closed() {
        let errors = [
            ValidatorError::Timeout,
            ValidatorError::UnexpectedStatus(500),
            ValidatorError::Redirect(302),
            ValidatorError::UnsafeUser("control characters"),
            ValidatorError::BodyTooLarge,
            ValidatorError::Malformed("x".into()),
            ValidatorError::Transport("refused".into()),
        ];
        for err in errors {
            let situation = Situation::Checked(Verdict::Error(err.clone()));
            assert_eq!(
                decide(situation),
                Decision::Deny {
                    status: DenyStatus::Unavailable,
                    reason: Reason::ValidatorError(err.kind())
                }
            );
        }
    }

    #[test]
    fn row7_malformed_is_400() {
        assert_eq!(
            decide(Situation::Malformed),
            Decision::Deny {
                status: DenyStatus::BadRequest,
                reason: Reason::Malformed
            }
        );
    }

    #[test]
    fn row8_cross_site_is_403() {
        assert_eq!(
            decide(Situation::CrossSite),
            Decision::Deny {
                status: DenyStatus::Forbidden,
                reason: Reason::CrossSite
            }
        );
        assert_eq!(DenyStatus::Forbidden.http_code(), 403);
        assert_eq!(Reason::CrossSite.as_str(), "cross_site");
    }

    #[test]
    fn row9_route_rule_refuses_a_valid_session_with_403() {
        assert_eq!(
            decide(Situation::Forbidden),
            Decision::Deny {
                status: DenyStatus::Forbidden,
                reason: Reason::Forbidden
            }
        );
        assert_eq!(Reason::Forbidden.as_str(), "forbidden");
    }

    #[test]
    fn row10_misconfigured_route_is_500() {
        assert_eq!(
            decide(Situation::MisconfiguredRoute),
            Decision::Deny {
                status: DenyStatus::Misconfigured,
                reason: Reason::MisconfiguredRoute
            }
        );
        assert_eq!(DenyStatus::Misconfigured.http_code(), 500);
        assert_eq!(Reason::MisconfiguredRoute.as_str(), "misconfigured_route");
    }

    #[test]
    fn ambiguity_is_401() {
        let decision = decide(Situation::Ambiguous(Ambiguity::CookieHeaderMismatch));
        assert_eq!(
            decision,
            Decision::Deny {
                status: DenyStatus::Unauthenticated,
                reason: Reason::Ambiguous(Ambiguity::CookieHeaderMismatch)
            }
        );
    }

    #[test]
    fn only_a_valid_verdict_or_disabled_auth_allows() {
        let situations = [
            Situation::Malformed,
            Situation::NoCredential,
            Situation::Ambiguous(Ambiguity::RepeatedHeader),
            Situation::CrossSite,
            Situation::Checked(Verdict::Invalid),
            Situation::Checked(Verdict::Error(ValidatorError::Timeout)),
        ];
        for situation in situations {
            assert!(!decide(situation.clone()).is_allow(), "{situation:?}");
        }
    }
}
