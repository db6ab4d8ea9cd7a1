//! Logout everywhere at once: `POST /v1/revoke` forgets a session's cached answers on this
//! replica, and Redis (or Valkey) pub/sub tells every other replica to forget them too.
//!
//! The bus carries the session's cache keys, never its token: the replicas make their keys
//! under a secret derived from the revocation secret they share, so the same session has the
//! same keys everywhere and nobody without the secret can tell whose they are.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use ring::hmac;

use crate::cache::{DecisionCache, Key};
use crate::metrics::Metrics;

/// The shortest revocation secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// The default Redis channel.
pub const DEFAULT_CHANNEL: &str = "session-authz.revocations";

/// The revocation secret: the bearer token `POST /v1/revoke` asks for, and the root of the
/// cache-key secret the replicas share. Never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct RevokeSecret(Vec<u8>);

impl fmt::Debug for RevokeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RevokeSecret(REDACTED)")
    }
}

impl RevokeSecret {
    /// The secret in a file's bytes, trailing whitespace (a final newline) aside; at least
    /// [`MIN_SECRET_LEN`] bytes of visible ASCII, so that it fits an `Authorization` header.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, &'static str> {
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |last| last + 1);
        let secret = &bytes[..end];
        if secret.len() < MIN_SECRET_LEN {
            return Err("holds fewer than 32 bytes (make one with: openssl rand -hex 32)");
        }
        if !secret.iter().all(u8::is_ascii_graphic) {
            return Err("holds something other than visible ASCII");
        }
        Ok(Self(secret.to_vec()))
    }

    /// Whether an `Authorization` header value is `Bearer <this secret>`, in constant time.
    pub fn authorizes(&self, authorization: &[u8]) -> bool {
        let Some(presented) = authorization.strip_prefix(b"Bearer ") else {
            return false;
        };
        // Compared as MACs under a key of the moment: equal-length, constant-time, and the
        // length of the secret is not timed either.
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new());
        let Ok(key) = key else { return false };
        let tag = hmac::sign(&key, &self.0);
        hmac::verify(&key, presented, tag.as_ref()).is_ok()
    }

    /// The secret the replicas' caches make their keys under.
    pub fn cache_secret(&self) -> [u8; 16] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let tag = hmac::sign(&key, b"session-authz cache keys v1");
        let mut secret = [0; 16];
        secret.copy_from_slice(&tag.as_ref()[..16]);
        secret
    }
}

/// Revocation settings (`revoke_secret_file`, `revocation_redis_url`, `revocation_channel`).
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub secret: RevokeSecret,
    /// The pub/sub engine (`redis://[user:password@]host:port[/db]`); `None`: a revocation
    /// reaches this replica only.
    pub redis: Option<url::Url>,
    pub channel: String,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: its host and port only.
        let bus = self.redis.as_ref().map(|url| {
            format!(
                "{}:{}",
                url.host_str().unwrap_or_default(),
                url.port().unwrap_or(6379)
            )
        });
        f.debug_struct("Settings")
            .field("bus", &bus)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// A revocation as the bus carries it: `v1`, then the session's two cache keys in hex.
fn message(keys: &[Key; 2]) -> String {
    format!("v1 {:032x} {:032x}", keys[0], keys[1])
}

fn parse(message: &[u8]) -> Option<[Key; 2]> {
    let text = std::str::from_utf8(message).ok()?;
    let mut words = text.split(' ');
    if words.next()? != "v1" {
        return None;
    }
    let mut key = || {
        let word = words.next()?;
        (word.len() == 32).then_some(())?;
        u128::from_str_radix(word, 16).ok()
    };
    let keys = [key()?, key()?];
    words.next().is_none().then_some(keys)
}

/// What a revocation reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Published on the bus: every connected replica forgets the session.
    Shared,
    /// This replica only: no bus is configured, or it is down (the others keep the session
    /// until their `cache_ttl`).
    Local,
}

/// How long a revocation waits for the bus before it is this replica's only.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// The wait before the subscriber connects again, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Revokes sessions here and on the bus, and applies what the bus says.
#[derive(Clone)]
pub struct Revocations {
    settings: Arc<Settings>,
    client: Option<redis::Client>,
    cache: DecisionCache,
    metrics: Arc<Metrics>,
    /// Whether the subscriber is connected: a revocation published now reaches this replica.
    subscribed: Arc<AtomicBool>,
}

impl fmt::Debug for Revocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocations")
            .field("channel", &self.settings.channel)
            .field("bus", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

/// Why the bus cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("revocation bus: {0}")]
pub struct BusError(#[from] redis::RedisError);

impl Revocations {
    /// `cache` must make its keys under [`RevokeSecret::cache_secret`].
    pub fn new(
        settings: Settings,
        cache: DecisionCache,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BusError> {
        let client = settings
            .redis
            .as_ref()
            .map(|url| redis::Client::open(url.as_str()))
            .transpose()?;
        Ok(Self {
            settings: Arc::new(settings),
            client,
            cache,
            metrics,
            subscribed: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn secret(&self) -> &RevokeSecret {
        &self.settings.secret
    }

    /// Forgets `token`'s answers here, then tells the other replicas.
    pub async fn revoke(&self, token: &str) -> Reach {
        let keys = self.cache.keys_of(token);
        self.cache.forget(&keys);
        let reach = match &self.client {
            None => Reach::Local,
            Some(client) => {
                match tokio::time::timeout(PUBLISH_TIMEOUT, self.publish(client, &keys)).await {
                    Ok(Ok(())) => Reach::Shared,
                    Ok(Err(err)) => {
                        tracing::warn!(%err, "revocation not shared: the other replicas keep the session until their cache_ttl");
                        Reach::Local
                    }
                    Err(_) => {
                        tracing::warn!(timeout = ?PUBLISH_TIMEOUT, "revocation not shared (bus timed out): the other replicas keep the session until their cache_ttl");
                        Reach::Local
                    }
                }
            }
        };
        self.metrics.revocation(reach == Reach::Shared);
        reach
    }

    async fn publish(&self, client: &redis::Client, keys: &[Key; 2]) -> Result<(), BusError> {
        let mut connection = client.get_multiplexed_async_connection().await?;
        let _receivers: i64 = redis::cmd("PUBLISH")
            .arg(&self.settings.channel)
            .arg(message(keys))
            .query_async(&mut connection)
            .await?;
        Ok(())
    }

    /// Listens on the bus until `stop` completes, connecting again whenever the connection is
    /// lost; while it is down, a metric and a warning say so, and Checks go on as without a
    /// bus (readiness is not touched).
    pub async fn follow(self, stop: impl std::future::Future<Output = ()>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        tokio::pin!(stop);
        let mut backoff = FIRST_BACKOFF;
        let mut warned = false;
        loop {
            tokio::select! {
                () = &mut stop => return,
                result = self.listen(&client) => {
                    self.metrics.revocation_bus_up(false);
                    // A connection that was up and dropped is news again, and retried soon.
                    if self.subscribed.swap(false, Ordering::AcqRel) {
                        warned = false;
                        backoff = FIRST_BACKOFF;
                    }
                    if let Err(err) = result {
                        if !warned {
                            tracing::warn!(%err, "revocation bus down: revocations are not being shared; sessions expire at cache_ttl as without one");
                            warned = true;
                        }
                    }
                }
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One subscription: connects, subscribes, applies messages until the connection ends.
    async fn listen(&self, client: &redis::Client) -> Result<(), BusError> {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&self.settings.channel).await?;
        // Subscribed from here on. Whatever was cached before may have been revoked unseen:
        // published while this replica was cut off, or not published at all (the bus down
        // at the replica that was asked). So it is all asked for again.
        let forgotten = self.cache.forget_all();
        self.subscribed.store(true, Ordering::Release);
        self.metrics.revocation_bus_up(true);
        tracing::info!(
            channel = %self.settings.channel,
            forgotten,
            "revocation bus connected; forgot the cached answers, which may have been revoked while it was not"
        );
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            match parse(message.get_payload_bytes()) {
                Some(keys) => {
                    self.cache.forget(&keys);
                    self.metrics.revocation_received();
                }
                None => {
                    tracing::warn!("revocation bus: a message that is not a revocation, ignored")
                }
            }
        }
        Err(BusError(redis::RedisError::from((
            redis::ErrorKind::Io,
            "connection closed",
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> RevokeSecret {
        RevokeSecret::from_file_bytes(b"0123456789abcdef0123456789abcdef\n").unwrap()
    }

    #[test]
    fn the_secret_is_checked_and_compared_whole() {
        let secret = secret();
        assert!(secret.authorizes(b"Bearer 0123456789abcdef0123456789abcdef"));
        for wrong in [
            &b"Bearer 0123456789abcdef0123456789abcde"[..],
            b"Bearer 0123456789abcdef0123456789abcdef0",
            b"bearer 0123456789abcdef0123456789abcdef",
            b"0123456789abcdef0123456789abcdef",
            b"Bearer ",
            b"",
        ] {
            assert!(!secret.authorizes(wrong), "{wrong:?}");
        }
        assert!(RevokeSecret::from_file_bytes(b"short\n").is_err());
        assert!(RevokeSecret::from_file_bytes(b"0123456789abcdef 0123456789abcdef").is_err());
        assert!(!format!("{secret:?}").contains("0123"));
    }

    #[test]
    fn replicas_sharing_the_secret_share_keys_and_messages_round_trip() {
        let settings = crate::cache::Settings::default();
        let one = DecisionCache::with_secret(settings, secret().cache_secret());
        let two = DecisionCache::with_secret(settings, secret().cache_secret());
        let keys = one.keys_of("tok");
        assert_eq!(keys, two.keys_of("tok"));
        assert_ne!(keys[0], keys[1]);
        let other = RevokeSecret::from_file_bytes(&[b'x'; 32]).unwrap();
        assert_ne!(
            DecisionCache::with_secret(settings, other.cache_secret()).keys_of("tok"),
            keys
        );
        let text = message(&keys);
        assert!(!text.contains("tok"));
        assert_eq!(parse(text.as_bytes()), Some(keys));
        for bad in [
            "",
            "v1",
            "v2 00 00",
            "v1 zz 00",
            &format!("{text} x"),
            &text[..text.len() - 1],
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
