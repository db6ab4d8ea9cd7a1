//! The signed identity assertion: a short-lived JWT (EdDSA or ES256) that an allow sends
//! upstream so that the app can verify who the proxy let in, and the JWKS its verifiers fetch.
//!
//! A cache hit does not sign again: an assertion is reused while more than half its life is
//! left (docs/benchmarks.md, "The signed assertion").

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use quick_cache::sync::Cache;
use quick_cache::Equivalent;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::Serialize;

use crate::contract::Identity;

/// The default `assertion_header`.
pub const DEFAULT_HEADER: &str = "x-auth-assertion";

/// Why a key file cannot sign assertions.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("holds no PEM block")]
    NoPem,
    #[error("holds {0} PEM blocks; give each key its own file")]
    SeveralPem(usize),
    #[error(
        "is a SEC1 \"EC PRIVATE KEY\"; convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt`"
    )]
    Sec1,
    #[error("holds a \"{0}\" PEM block, not a \"PRIVATE KEY\" (PKCS#8)")]
    NotPrivateKey(String),
    #[error("is neither an Ed25519 nor a P-256 private key (PKCS#8)")]
    Unsupported,
    #[error("has the same key as an earlier file")]
    Repeated,
}

/// One private key: its JWS algorithm, its `kid` (the RFC 7638 thumbprint of its public key)
/// and its public half as a JWK.
struct SigningKey {
    algorithm: Algorithm,
    kid: String,
    encoding: EncodingKey,
    public: PublicJwk,
}

/// A public key as JWKS members carry it (RFC 8037 for Ed25519, RFC 7518 for P-256).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct PublicJwk {
    kty: &'static str,
    crv: &'static str,
    x: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    alg: &'static str,
    #[serde(rename = "use")]
    usage: &'static str,
    kid: String,
}

impl SigningKey {
    /// A PKCS#8 PEM private key, Ed25519 or P-256.
    fn from_pem(pem_text: &[u8]) -> Result<Self, KeyError> {
        let blocks = pem::parse_many(pem_text).map_err(|_| KeyError::NoPem)?;
        let block = match blocks.as_slice() {
            [] => return Err(KeyError::NoPem),
            [one] => one,
            several => return Err(KeyError::SeveralPem(several.len())),
        };
        match block.tag() {
            "PRIVATE KEY" => {}
            "EC PRIVATE KEY" => return Err(KeyError::Sec1),
            other => return Err(KeyError::NotPrivateKey(other.to_owned())),
        }
        let der = block.contents();
        if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
            // RFC 7638: the required members, in lexicographic order, no blanks.
            let thumbprint = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
            let kid = thumbprint_of(&thumbprint);
            return Ok(Self {
                algorithm: Algorithm::EdDSA,
                encoding: EncodingKey::from_ed_der(der),
                public: PublicJwk {
                    kty: "OKP",
                    crv: "Ed25519",
                    x,
                    y: None,
                    alg: "EdDSA",
                    usage: "sig",
                    kid: kid.clone(),
                },
                kid,
            });
        }
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .map_err(|_| KeyError::Unsupported)?;
        // An uncompressed point: 0x04, then x and y, 32 bytes each.
        let point = pair.public_key().as_ref();
        let (Some(x), Some(y)) = (point.get(1..33), point.get(33..65)) else {
            return Err(KeyError::Unsupported);
        };
        let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
        let thumbprint = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = thumbprint_of(&thumbprint);
        Ok(Self {
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(der),
            public: PublicJwk {
                kty: "EC",
                crv: "P-256",
                x,
                y: Some(y),
                alg: "ES256",
                usage: "sig",
                kid: kid.clone(),
            },
            kid,
        })
    }
}

fn thumbprint_of(canonical: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
}

/// The keys from `assertion_key`: the first signs, every one is published (rotation: add the
/// new key second, let verifiers fetch the JWKS, then make it first, then drop the old one).
pub struct KeySet {
    keys: Vec<SigningKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The kids only: never key material.
        f.debug_list()
            .entries(self.keys.iter().map(|key| &key.kid))
            .finish()
    }
}

impl PartialEq for KeySet {
    fn eq(&self, other: &Self) -> bool {
        self.kids().eq(other.kids())
    }
}

impl Eq for KeySet {}

impl KeySet {
    /// The keys, from each file's PEM text in order; `Err` names the file's index and why.
    pub fn from_pems<'a>(
        pems: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, (usize, KeyError)> {
        let mut keys: Vec<SigningKey> = Vec::new();
        for (index, text) in pems.into_iter().enumerate() {
            let key = SigningKey::from_pem(text).map_err(|err| (index, err))?;
            if keys.iter().any(|known| known.kid == key.kid) {
                return Err((index, KeyError::Repeated));
            }
            keys.push(key);
        }
        Ok(Self { keys })
    }

    /// The `kid` of each key, the signing one first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|key| key.kid.as_str())
    }

    /// The public keys as a JWKS document (`/.well-known/jwks.json`).
    pub fn jwks(&self) -> String {
        #[derive(Serialize)]
        struct Jwks<'a> {
            keys: Vec<&'a PublicJwk>,
        }
        let keys = self.keys.iter().map(|key| &key.public).collect();
        serde_json::to_string(&Jwks { keys }).unwrap_or_else(|_| r#"{"keys":[]}"#.to_owned())
    }
}

/// What the assertions say and how long they live (`assertion_*` keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub keys: Arc<KeySet>,
    /// The files the keys were read from, in order: a reload watches them.
    pub files: Vec<std::path::PathBuf>,
    /// `iss`.
    pub issuer: String,
    /// `aud` where the route names none.
    pub audience: String,
    /// From `iat` to `exp`.
    pub ttl: Duration,
}

/// Why an allow could not get its assertion.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot sign the identity assertion: no key")]
    NoKey,
    #[error("cannot sign the identity assertion: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
}

/// The claims, in the order written.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roles: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    iat: u64,
    exp: u64,
}

/// An issued assertion and until when it is handed out again.
#[derive(Clone)]
struct Issued {
    token: Arc<str>,
    /// Unix seconds: `iat` plus half the TTL.
    reuse_until: u64,
}

/// The cache's key: whom the assertion names, for which audience.
#[derive(PartialEq, Eq)]
struct Subject {
    identity: Identity,
    audience: Box<str>,
}

/// A [`Subject`] borrowed from a Check, for lookups that allocate nothing.
struct SubjectRef<'a> {
    identity: &'a Identity,
    audience: &'a str,
}

impl Hash for Subject {
    fn hash<H: Hasher>(&self, state: &mut H) {
        SubjectRef {
            identity: &self.identity,
            audience: &self.audience,
        }
        .hash(state);
    }
}

impl Hash for SubjectRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.identity.hash(state);
        self.audience.hash(state);
    }
}

impl Equivalent<Subject> for SubjectRef<'_> {
    fn equivalent(&self, key: &Subject) -> bool {
        *self.identity == key.identity && *self.audience == *key.audience
    }
}

/// Signs assertions, reusing each while more than half its life is left.
pub struct Signer {
    settings: Settings,
    issued: Cache<Subject, Issued>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// At most `capacity` assertions are kept for reuse.
    pub fn new(settings: Settings, capacity: usize) -> Self {
        Self {
            settings,
            issued: Cache::new(capacity.max(1)),
        }
    }

    /// The assertion for `identity` towards `audience` (the route's, else `assertion_audience`).
    pub fn assertion(
        &self,
        identity: &Identity,
        audience: Option<&str>,
    ) -> Result<Arc<str>, SignError> {
        self.assertion_at(identity, audience, unix_now())
    }

    fn assertion_at(
        &self,
        identity: &Identity,
        audience: Option<&str>,
        now: u64,
    ) -> Result<Arc<str>, SignError> {
        let audience = audience.unwrap_or(&self.settings.audience);
        let subject = SubjectRef { identity, audience };
        if let Some(issued) = self.issued.get(&subject) {
            if now < issued.reuse_until {
                return Ok(issued.token);
            }
        }
        let token: Arc<str> = self.sign(identity, audience, now)?.into();
        let ttl = self.settings.ttl.as_secs();
        self.issued.insert(
            Subject {
                identity: identity.clone(),
                audience: audience.into(),
            },
            Issued {
                token: token.clone(),
                reuse_until: now + ttl / 2,
            },
        );
        Ok(token)
    }

    fn sign(&self, identity: &Identity, audience: &str, now: u64) -> Result<String, SignError> {
        // Config builds no signer without a key.
        let key = self.settings.keys.keys.first().ok_or(SignError::NoKey)?;
        let mut header = Header::new(key.algorithm);
        header.kid = Some(key.kid.clone());
        let claims = Claims {
            iss: &self.settings.issuer,
            aud: audience,
            sub: identity.user(),
            roles: identity.roles().collect(),
            email: identity.email(),
            iat: now,
            exp: now + self.settings.ttl.as_secs(),
        };
        Ok(jsonwebtoken::encode(&header, &claims, &key.encoding)?)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};

    /// PKCS#8 PEM keys, as `openssl genpkey` writes them.
    fn p256_pem() -> String {
        let rng = SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()))
    }

    fn ed25519_pem() -> String {
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()))
    }

    fn signer(pems: &[String], ttl: u64) -> Signer {
        let keys = KeySet::from_pems(pems.iter().map(|p| p.as_bytes())).unwrap();
        Signer::new(
            Settings {
                keys: Arc::new(keys),
                files: Vec::new(),
                issuer: "session-authz".to_owned(),
                audience: "dashboard".to_owned(),
                ttl: Duration::from_secs(ttl),
            },
            100,
        )
    }

    /// The JWKS member for `kid`, as the decoding key a verifier would build from it.
    fn decoding_key(signer: &Signer, kid: &str) -> DecodingKey {
        let jwks: serde_json::Value = serde_json::from_str(&signer.settings.keys.jwks()).unwrap();
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
        DecodingKey::from_jwk(&jwk).unwrap()
    }

    fn verify(signer: &Signer, token: &str, audience: &str) -> serde_json::Value {
        let header = decode_header(token).unwrap();
        let key = decoding_key(signer, header.kid.as_deref().unwrap());
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[audience]);
        validation.set_issuer(&["session-authz"]);
        // The tests sign at made-up times long past; `exp` is compared by each test.
        validation.validate_exp = false;
        decode::<serde_json::Value>(token, &key, &validation)
            .unwrap()
            .claims
    }

    #[test]
    fn both_key_kinds_sign_what_their_jwks_verifies() {
        let alice = Identity::new(Some("alice"), &["admin", "ops"], Some("a@example.com"));
        for pem in [ed25519_pem(), p256_pem()] {
            let signer = signer(&[pem], 60);
            let token = signer.assertion_at(&alice, None, 1_000).unwrap();
            let claims = verify(&signer, &token, "dashboard");
            assert_eq!(claims["sub"], "alice");
            assert_eq!(claims["roles"], serde_json::json!(["admin", "ops"]));
            assert_eq!(claims["email"], "a@example.com");
            assert_eq!(claims["iat"], 1_000);
            assert_eq!(claims["exp"], 1_060);
        }
    }

    #[test]
    fn the_route_audience_replaces_the_default_and_absent_fields_stay_out() {
        let signer = signer(&[ed25519_pem()], 60);
        let nobody = Identity::new(None, &[] as &[&str], None);
        let token = signer
            .assertion_at(&nobody, Some("billing"), 1_000)
            .unwrap();
        let claims = verify(&signer, &token, "billing");
        let keys: Vec<_> = claims.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["aud", "exp", "iat", "iss"]);
    }

    #[test]
    fn an_assertion_is_reused_only_while_more_than_half_its_life_is_left() {
        let signer = signer(&[p256_pem()], 60);
        let alice = Identity::named("alice");
        let first = signer.assertion_at(&alice, None, 1_000).unwrap();
        assert!(Arc::ptr_eq(
            &first,
            &signer.assertion_at(&alice, None, 1_029).unwrap()
        ));
        // Another audience or another identity is another assertion.
        assert_ne!(
            first,
            signer.assertion_at(&alice, Some("other"), 1_001).unwrap()
        );
        let bob = Identity::named("bob");
        assert_ne!(first, signer.assertion_at(&bob, None, 1_001).unwrap());
        let renewed = signer.assertion_at(&alice, None, 1_030).unwrap();
        assert_ne!(first, renewed);
        assert_eq!(verify(&signer, &renewed, "dashboard")["iat"], 1_030);
    }

    #[test]
    fn the_first_key_signs_and_every_key_is_published() {
        let (first, second) = (ed25519_pem(), p256_pem());
        let signer = signer(&[first, second], 60);
        let kids: Vec<_> = signer.settings.keys.kids().map(str::to_owned).collect();
        assert_eq!(kids.len(), 2);
        let token = signer.assertion_at(&Identity::named("a"), None, 1).unwrap();
        assert_eq!(
            decode_header(&token).unwrap().kid.as_deref(),
            Some(kids[0].as_str())
        );
        assert_eq!(decode_header(&token).unwrap().alg, Algorithm::EdDSA);
        let jwks: serde_json::Value = serde_json::from_str(&signer.settings.keys.jwks()).unwrap();
        assert_eq!(jwks["keys"][1]["kty"], "EC");
        assert_eq!(jwks["keys"][1]["kid"], kids[1].as_str());
    }

    /// RFC 8037 appendix A.3: the thumbprint of its Ed25519 example key.
    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint() {
        let canonical =
            r#"{"crv":"Ed25519","kty":"OKP","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        assert_eq!(
            thumbprint_of(canonical),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn a_key_file_we_cannot_sign_with_says_why() {
        let cases: [(String, KeyError); 5] = [
            ("not pem".to_owned(), KeyError::NoPem),
            (
                format!("{}{}", ed25519_pem(), ed25519_pem()),
                KeyError::SeveralPem(2),
            ),
            (
                "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n".to_owned(),
                KeyError::Sec1,
            ),
            (
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_owned(),
                KeyError::NotPrivateKey("PUBLIC KEY".to_owned()),
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_owned(),
                KeyError::Unsupported,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                SigningKey::from_pem(text.as_bytes()).err(),
                Some(want.clone()),
                "{want}"
            );
        }
        let same = ed25519_pem();
        let twice = KeySet::from_pems([same.as_bytes(), same.as_bytes()]);
        assert_eq!(twice.err(), Some((1, KeyError::Repeated)));
    }
}
