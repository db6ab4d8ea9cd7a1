//! The decision cache in front of the validator: bounded, per-answer TTLs, one validator call per
//! token however many Checks wait for it, and an opt-in stale-if-error window.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quick_cache::sync::{Cache, EntryAction, EntryResult};

use arc_swap::ArcSwap;

use crate::contract::{CacheDirective, Identity, Reply, ValidatorError, Verdict};
use crate::credential::{Credential, Source};

/// Cache settings (config keys `cache_ttl`, `cache_negative_ttl`, `cache_max_entries`,
/// `stale_if_error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Longest life of a valid answer; zero turns caching off.
    pub ttl: Duration,
    /// Longest life of an invalid answer.
    pub negative_ttl: Duration,
    pub max_entries: u64,
    /// How long a confirmed-valid session stays allowed while the validator errs; zero is off.
    pub stale_if_error: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            negative_ttl: Duration::from_secs(2),
            max_entries: 100_000,
            stale_if_error: Duration::ZERO,
        }
    }
}

/// How a verdict was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// From the cache, no call.
    Hit,
    /// This Check made the validator call.
    Miss,
    /// Another Check's call, waited for.
    Coalesced,
    /// The validator erred; a recent valid answer was used (stale-if-error).
    Stale,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Hit => "hit",
            Origin::Miss => "miss",
            Origin::Coalesced => "coalesced",
            Origin::Stale => "stale",
        }
    }
}

/// A verdict, how it was obtained, and the cookies the validator set with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answered {
    pub verdict: Verdict,
    pub origin: Origin,
    /// The answer's `Set-Cookie` values, only for the Check whose own call produced it
    /// ([`Origin::Miss`]): never stored, so never replayed to a hit, a coalesced waiter or a
    /// stale allow (a renewal meant for one client must not reach another).
    pub set_cookies: Vec<String>,
}

impl Answered {
    fn without_cookies(verdict: Verdict, origin: Origin) -> Self {
        Self {
            verdict,
            origin,
            set_cookies: Vec::new(),
        }
    }
}

/// A keyed 128-bit SipHash of the source and the whole token under this cache's secret: the raw
/// token is never stored, and without the secret nobody can choose tokens whose keys collide.
pub type Key = u128;

#[derive(Clone, Debug)]
enum Entry {
    /// `Valid` or `Invalid`, counting until `expires`: fixed at insertion, so a hit never
    /// extends it.
    Answer {
        verdict: Verdict,
        expires: Instant,
        call: u64,
    },
    /// A failed call, kept only so that the Checks which waited for it get its error: no Check
    /// that starts after it takes it for an answer (errors are never cached).
    Failed { error: ValidatorError, call: u64 },
}

impl Entry {
    /// Which call produced this entry, in the order calls finished.
    fn call(&self) -> u64 {
        match self {
            Entry::Answer { call, .. } | Entry::Failed { call, .. } => *call,
        }
    }
}

/// What time it is, for the entries' deadlines: the real clock, or a hand-moved one in tests.
type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The cache. Cheap to clone.
#[derive(Clone)]
pub struct DecisionCache {
    /// Replaced whole by a reload ([`DecisionCache::set_lifetimes`]); read on a miss only.
    settings: Arc<ArcSwap<Settings>>,
    now: Clock,
    entries: Arc<Cache<Key, Entry>>,
    /// Counts finished validator calls; an entry carries its call's number, so that a Check
    /// can tell the call it waited for from one that finished before it began.
    calls: Arc<AtomicU64>,
    /// Sessions confirmed valid, with when; used within `stale_if_error`, `None` when that
    /// is off.
    last_valid: Option<Arc<Cache<Key, (Identity, Instant)>>>,
    /// The [`Key`] secret, drawn at start-up.
    secret: [u8; 16],
}

impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("settings", &**self.settings.load())
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// What a Check that missed found once the call in flight (if any) was done.
enum Joined {
    Answered(Verdict),
    Failed(ValidatorError),
}

impl DecisionCache {
    pub fn new(settings: Settings) -> Self {
        Self::with_clock(settings, Arc::new(Instant::now))
    }

    /// A cache whose keys are made under `secret` rather than a secret of its own: replicas
    /// that share it compute the same key for a session, so that a revocation can name it
    /// without naming the token ([`crate::revoke`]).
    pub fn with_secret(settings: Settings, secret: [u8; 16]) -> Self {
        Self {
            secret,
            ..Self::new(settings)
        }
    }

    /// The keys `token` has in this cache, sent as a cookie and as the header.
    pub fn keys_of(&self, token: &str) -> [Key; 2] {
        [Source::Cookie, Source::Header]
            .map(|source| key(&self.secret, &Credential::new(source, token)))
    }

    /// Forgets the answers under `keys`, and what `stale_if_error` remembers of them: the next
    /// Check of such a session asks the validator.
    pub fn forget(&self, keys: &[Key]) {
        for key in keys {
            self.entries.remove(key);
            if let Some(last_valid) = &self.last_valid {
                last_valid.remove(key);
            }
        }
    }

    /// Forgets every answer, and all that `stale_if_error` remembers, returning how many
    /// answers were held: for when revocations may have been missed.
    pub fn forget_all(&self) -> u64 {
        let held = self.entry_count();
        self.entries.clear();
        if let Some(last_valid) = &self.last_valid {
            last_valid.clear();
        }
        held
    }

    fn with_clock(settings: Settings, now: Clock) -> Self {
        // quick_cache: a sharded map with CLOCK-Pro-style eviction (a one-off key enters a
        // "cold" section and leaves first, so a token spray does not push out sessions in use)
        // and its own coalescing placeholders; at least `max_entries` rounded up to the shards.
        // docs/benchmarks.md, "The cache", has the figures against moka.
        let capacity = usize::try_from(settings.max_entries).unwrap_or(usize::MAX);
        let last_valid =
            (!settings.stale_if_error.is_zero()).then(|| Arc::new(Cache::new(capacity)));
        Self {
            settings: Arc::new(ArcSwap::from_pointee(settings)),
            now,
            entries: Arc::new(Cache::new(capacity)),
            calls: Arc::new(AtomicU64::new(0)),
            last_valid,
            secret: secret(),
        }
    }

    /// New answers live by `ttl` and `negative_ttl` from now on (a config reload); answers held
    /// keep the deadline they got. The size and `stale_if_error` are fixed at start-up.
    pub fn set_lifetimes(&self, ttl: Duration, negative_ttl: Duration) {
        let settings = Settings {
            ttl,
            negative_ttl,
            ..**self.settings.load()
        };
        self.settings.store(Arc::new(settings));
    }

    /// Entries currently held, failed calls and expired answers not yet evicted included.
    pub fn entry_count(&self) -> u64 {
        self.entries.len() as u64
    }

    /// The verdict for `credential`: cached, or from one `fetch` shared by every concurrent
    /// Check of the same credential. If the Check running `fetch` is dropped, a waiting one
    /// takes over; if `fetch` fails, every waiter gets the error and nothing is cached.
    pub async fn lookup<F, Fut>(&self, credential: &Credential, fetch: F) -> Answered
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Reply>,
    {
        let key = key(&self.secret, credential);
        if let Some(Entry::Answer {
            verdict, expires, ..
        }) = self.entries.get(&key)
        {
            if expires > (self.now)() {
                return Answered::without_cookies(verdict, Origin::Hit);
            }
        }
        // Boxed: the miss's state (the validator call's among it) is kilobytes, and a hit
        // should not carry it in every future that awaits this one (docs/benchmarks.md).
        Box::pin(self.miss(key, fetch)).await
    }

    /// [`DecisionCache::lookup`] past its hit: join a call in flight, or make one.
    async fn miss<F, Fut>(&self, key: Key, fetch: F) -> Answered
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Reply>,
    {
        // Calls that finished before this point are not this Check's to share.
        let begun = self.calls.load(Ordering::SeqCst);
        let now = &self.now;
        let joined = self
            .entries
            .entry_async(&key, |_, entry| match entry {
                // The call this Check waited for (or one that finished as it began): its
                // answer, even one that may not be kept (`no-store`), and its error.
                _ if entry.call() > begun => EntryAction::Retain(match entry {
                    Entry::Answer { verdict, .. } => Joined::Answered(verdict.clone()),
                    Entry::Failed { error, .. } => Joined::Failed(error.clone()),
                }),
                Entry::Answer {
                    verdict, expires, ..
                } if *expires > now() => EntryAction::Retain(Joined::Answered(verdict.clone())),
                _ => EntryAction::ReplaceWithGuard,
            })
            .await;
        let guard = match joined {
            EntryResult::Retained(Joined::Answered(verdict)) => {
                return Answered::without_cookies(verdict, Origin::Coalesced)
            }
            EntryResult::Retained(Joined::Failed(error)) => return self.on_error(key, error),
            EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _) => Some(guard),
            // Neither happens (no deadline, and the closure never removes); should one, this
            // Check asks the validator itself and keeps nothing.
            EntryResult::Removed(..) | EntryResult::Timeout => None,
        };
        // This Check makes the call. Dropped before `insert` (the Check was cancelled), the
        // guard hands the call to one of the waiters.
        let reply = fetch().await;
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        match reply.verdict {
            Verdict::Error(error) => {
                if let Some(guard) = guard {
                    let _ = guard.insert(Entry::Failed {
                        error: error.clone(),
                        call,
                    });
                }
                self.on_error(key, error)
            }
            verdict => {
                if let Some(guard) = guard {
                    let ttl = ttl_for(&self.settings.load(), &verdict, reply.cache);
                    let _ = guard.insert(Entry::Answer {
                        verdict: verdict.clone(),
                        expires: (self.now)() + ttl,
                        call,
                    });
                }
                self.remember(key, &verdict);
                Answered {
                    verdict,
                    origin: Origin::Miss,
                    set_cookies: reply.set_cookies,
                }
            }
        }
    }

    fn remember(&self, key: Key, verdict: &Verdict) {
        let Some(last_valid) = &self.last_valid else {
            return;
        };
        match verdict {
            Verdict::Valid(identity) => last_valid.insert(key, (identity.clone(), (self.now)())),
            // A revoked session must never come back through stale-if-error.
            _ => {
                last_valid.remove(&key);
            }
        }
    }

    fn on_error(&self, key: Key, err: ValidatorError) -> Answered {
        if let Some(last_valid) = &self.last_valid {
            if let Some((identity, confirmed)) = last_valid.get(&key) {
                if confirmed + self.settings.load().stale_if_error > (self.now)() {
                    return Answered::without_cookies(Verdict::Valid(identity), Origin::Stale);
                }
            }
        }
        // Coalesced waiters share the leader's error; all of them deny.
        Answered::without_cookies(Verdict::Error(err), Origin::Miss)
    }
}

/// The entry's life: the configured TTL for its kind, shortened by `max-age`, zero for
/// `no-store`.
fn ttl_for(settings: &Settings, verdict: &Verdict, cache: CacheDirective) -> Duration {
    if cache.no_store {
        return Duration::ZERO;
    }
    let base = match verdict {
        Verdict::Valid(_) => settings.ttl,
        _ => settings.negative_ttl,
    };
    cache.max_age.map_or(base, |max_age| max_age.min(base))
}

/// SipHash-2-4 with a 128-bit output: a keyed pseudo-random function for short inputs, about a
/// tenth of SHA-256's instructions for a session token, and as collision-free in practice (a
/// clash among a cache's entries, which would mix two sessions, has odds near 2^-90).
fn key(secret: &[u8; 16], credential: &Credential) -> Key {
    use std::hash::Hasher;
    let mut hasher = siphasher::sip128::SipHasher24::new_with_key(secret);
    hasher.write_u8(match credential.source() {
        Source::Cookie => b'c',
        Source::Header => b'h',
    });
    hasher.write(credential.token().as_bytes());
    siphasher::sip128::Hasher128::finish128(&hasher).as_u128()
}

/// A fresh secret for [`key`], from the operating system's random source; should that fail,
/// from std's `RandomState`, which draws its own keys from the same source.
fn secret() -> [u8; 16] {
    use ring::rand::SecureRandom;
    use std::hash::BuildHasher;
    let mut secret = [0; 16];
    if ring::rand::SystemRandom::new().fill(&mut secret).is_err() {
        let state = std::collections::hash_map::RandomState::new();
        let halves = [state.hash_one(1_u8), state.hash_one(2_u8)];
        for (chunk, half) in secret.chunks_mut(8).zip(halves) {
            chunk.copy_from_slice(&half.to_le_bytes());
        }
    }
    secret
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn valid(user: &str) -> Verdict {
        Verdict::Valid(Identity::named(user))
    }

    impl DecisionCache {
        /// [`DecisionCache::lookup`] without the cookies, for the tests about verdicts.
        async fn verdict<F, Fut>(&self, credential: &Credential, fetch: F) -> (Verdict, Origin)
        where
            F: FnOnce() -> Fut,
            Fut: Future<Output = Reply>,
        {
            let answered = self.lookup(credential, fetch).await;
            (answered.verdict, answered.origin)
        }
    }

    fn cookie(token: &str) -> Credential {
        Credential::new(Source::Cookie, token)
    }

    #[test]
    fn ttl_rules() {
        let settings = Settings::default();
        let none = CacheDirective::default();
        assert_eq!(ttl_for(&settings, &valid("a"), none), settings.ttl);
        assert_eq!(
            ttl_for(&settings, &Verdict::Invalid, none),
            settings.negative_ttl
        );
        let short = CacheDirective {
            no_store: false,
            max_age: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            ttl_for(&settings, &valid("a"), short),
            Duration::from_secs(3)
        );
        let long = CacheDirective {
            no_store: false,
            max_age: Some(Duration::from_secs(3600)),
        };
        assert_eq!(ttl_for(&settings, &valid("a"), long), settings.ttl);
        let no_store = CacheDirective {
            no_store: true,
            max_age: Some(Duration::from_secs(5)),
        };
        assert_eq!(ttl_for(&settings, &valid("a"), no_store), Duration::ZERO);
        let off = Settings {
            ttl: Duration::ZERO,
            ..settings
        };
        assert_eq!(ttl_for(&off, &valid("a"), none), Duration::ZERO);
    }

    #[test]
    fn key_covers_source_and_whole_token() {
        let secret = secret();
        let a = key(&secret, &cookie("token-aaaa"));
        assert_ne!(a, key(&secret, &cookie("token-aaab")));
        assert_ne!(
            a,
            key(&secret, &Credential::new(Source::Header, "token-aaaa"))
        );
        assert_eq!(a, key(&secret, &cookie("token-aaaa")));
        // Another cache, another secret: nobody can know a key in advance.
        assert_ne!(secret, self::secret());
        assert_ne!(a, key(&self::secret(), &cookie("token-aaaa")));
    }

    #[tokio::test]
    async fn hits_do_not_call_and_errors_are_not_cached() {
        let cache = DecisionCache::new(Settings::default());
        let calls = AtomicUsize::new(0);
        let fetch = |verdict: Verdict| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Reply::from(verdict) }
        };
        let (v, o) = cache.verdict(&cookie("t"), || fetch(valid("alice"))).await;
        assert_eq!((v, o), (valid("alice"), Origin::Miss));
        let (v, o) = cache
            .verdict(&cookie("t"), || fetch(Verdict::Invalid))
            .await;
        assert_eq!((v, o), (valid("alice"), Origin::Hit));

        let err = Verdict::Error(ValidatorError::Timeout);
        let (v, _) = cache.verdict(&cookie("e"), || fetch(err.clone())).await;
        assert_eq!(v, err);
        let (v, o) = cache.verdict(&cookie("e"), || fetch(valid("bob"))).await;
        assert_eq!((v, o), (valid("bob"), Origin::Miss));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    /// A cache whose clock moves only when the test says so, and the hand that moves it (in
    /// seconds).
    fn clocked(settings: Settings) -> (DecisionCache, impl Fn(u64)) {
        let start = Instant::now();
        let elapsed = Arc::new(std::sync::Mutex::new(Duration::ZERO));
        let read = elapsed.clone();
        let cache =
            DecisionCache::with_clock(settings, Arc::new(move || start + *read.lock().unwrap()));
        let advance = move |by: u64| *elapsed.lock().unwrap() += Duration::from_secs(by);
        (cache, advance)
    }

    /// A reload's new lifetimes hold for answers from then on; one held keeps its deadline.
    #[tokio::test]
    async fn new_lifetimes_apply_to_new_answers_only() {
        let (cache, advance) = clocked(Settings {
            ttl: Duration::from_secs(100),
            ..Settings::default()
        });
        let ok = || async { Reply::from(valid("alice")) };
        let revoked = || async { Reply::from(Verdict::Invalid) };
        assert_eq!(cache.verdict(&cookie("old"), ok).await.1, Origin::Miss);
        cache.set_lifetimes(Duration::from_secs(10), Duration::from_secs(1));
        assert_eq!(cache.verdict(&cookie("new"), ok).await.1, Origin::Miss);
        advance(10);
        assert_eq!(cache.verdict(&cookie("new"), revoked).await.1, Origin::Miss);
        assert_eq!(cache.verdict(&cookie("old"), revoked).await.1, Origin::Hit);
    }

    #[tokio::test]
    async fn an_answer_counts_for_one_ttl_from_the_call_and_hits_never_extend_it() {
        let (cache, advance) = clocked(Settings {
            ttl: Duration::from_secs(400),
            negative_ttl: Duration::from_secs(400),
            ..Settings::default()
        });
        let ok = || async { Reply::from(valid("alice")) };
        let revoked = || async { Reply::from(Verdict::Invalid) };

        assert_eq!(cache.verdict(&cookie("t"), ok).await.1, Origin::Miss);
        // Revoked at the validator: the answer still counts until its deadline...
        advance(150);
        assert_eq!(
            cache.verdict(&cookie("t"), revoked).await,
            (valid("alice"), Origin::Hit)
        );
        advance(249);
        assert_eq!(
            cache.verdict(&cookie("t"), revoked).await,
            (valid("alice"), Origin::Hit)
        );
        // ...and not a moment longer, however many hits came in between.
        advance(1);
        assert_eq!(
            cache.verdict(&cookie("t"), revoked).await,
            (Verdict::Invalid, Origin::Miss)
        );
    }

    #[tokio::test]
    async fn max_age_shortens_the_life_of_an_answer() {
        let (cache, advance) = clocked(Settings {
            ttl: Duration::from_secs(300),
            ..Settings::default()
        });
        let with_max_age = |secs| {
            move || async move {
                Reply {
                    verdict: valid("alice"),
                    cache: CacheDirective {
                        no_store: false,
                        max_age: Some(Duration::from_secs(secs)),
                    },
                    set_cookies: Vec::new(),
                }
            }
        };
        // max-age below cache_ttl wins; above it, cache_ttl caps it.
        for (token, max_age, lives) in [("a", 60, 60), ("b", 900, 300)] {
            let credential = cookie(token);
            let lookup = || cache.verdict(&credential, with_max_age(max_age));
            assert_eq!(lookup().await.1, Origin::Miss, "{token}");
            advance(lives - 1);
            assert_eq!(lookup().await.1, Origin::Hit, "{token}");
            advance(1);
            assert_eq!(lookup().await.1, Origin::Miss, "{token}");
        }
    }

    #[tokio::test]
    async fn stale_if_error_allows_only_recently_valid_and_never_revoked() {
        let cache = DecisionCache::new(Settings {
            ttl: Duration::ZERO,
            negative_ttl: Duration::ZERO,
            stale_if_error: Duration::from_secs(60),
            ..Settings::default()
        });
        let err = || async { Reply::from(Verdict::Error(ValidatorError::Timeout)) };
        let ok = || async { Reply::from(valid("alice")) };
        let revoked = || async { Reply::from(Verdict::Invalid) };

        assert_eq!(cache.verdict(&cookie("t"), ok).await.0, valid("alice"));
        assert_eq!(
            cache.verdict(&cookie("t"), err).await,
            (valid("alice"), Origin::Stale)
        );
        assert_eq!(
            cache.verdict(&cookie("t"), revoked).await.0,
            Verdict::Invalid
        );
        assert!(matches!(
            cache.verdict(&cookie("t"), err).await.0,
            Verdict::Error(_)
        ));
        // Never-seen tokens get no stale allow.
        assert!(matches!(
            cache.verdict(&cookie("other"), err).await.0,
            Verdict::Error(_)
        ));
    }

    #[tokio::test]
    async fn forgetting_all_leaves_neither_answers_nor_stale_ones() {
        let cache = DecisionCache::new(Settings {
            stale_if_error: Duration::from_secs(60),
            ..Settings::default()
        });
        let ok = || async { Reply::from(valid("alice")) };
        let err = || async { Reply::from(Verdict::Error(ValidatorError::Timeout)) };
        for token in ["a", "b"] {
            assert_eq!(cache.verdict(&cookie(token), ok).await.1, Origin::Miss);
            assert_eq!(cache.verdict(&cookie(token), ok).await.1, Origin::Hit);
        }
        assert_eq!(cache.forget_all(), 2);
        assert_eq!(cache.entry_count(), 0);
        // Asked again; and with the validator failing, no stale allow is left to fall back on.
        assert!(matches!(
            cache.verdict(&cookie("a"), err).await,
            (Verdict::Error(_), Origin::Miss)
        ));
        assert_eq!(cache.verdict(&cookie("b"), ok).await.1, Origin::Miss);
    }

    /// Sends `junk` one-off tokens through a cache of 1 000 entries where a real user's session
    /// was seen twice, the user checking again after every `every` of them: each such Check
    /// must be a hit, and the cache must stay within its size.
    async fn spray(junk: usize, every: usize) {
        let cache = DecisionCache::new(Settings {
            max_entries: 1_000,
            ..Settings::default()
        });
        let real = cookie("real-user-token");
        let ok = || async { Reply::from(valid("alice")) };
        cache.verdict(&real, ok).await;
        cache.verdict(&real, ok).await;
        for i in 1..=junk {
            let junk = cookie(&format!("junk-{i}"));
            cache
                .verdict(&junk, || async { Reply::from(Verdict::Invalid) })
                .await;
            if i % every == 0 {
                assert_eq!(
                    cache.verdict(&real, ok).await,
                    (valid("alice"), Origin::Hit),
                    "after {i} junk tokens"
                );
            }
        }
        assert!(cache.entry_count() <= 1_000, "{}", cache.entry_count());
    }

    #[tokio::test]
    async fn token_spray_stays_bounded_and_keeps_a_real_user() {
        // The real user keeps using the dashboard during the spray (1% of the traffic).
        spray(100_000, 100).await;
    }

    #[tokio::test]
    async fn a_spray_longer_than_the_cache_still_keeps_a_user_seen_twice() {
        // Five times the cache's size in one-off tokens between two of the user's Checks: a
        // least-recently-used cache would have dropped the user (moka's did).
        spray(20_000, 5_000).await;
    }

    fn renewing(verdict: Verdict, cookie: &str) -> Reply {
        Reply {
            set_cookies: vec![cookie.to_owned()],
            ..Reply::from(verdict)
        }
    }

    #[tokio::test]
    async fn set_cookies_reach_only_the_check_whose_call_made_them() {
        let (cache, advance) = clocked(Settings {
            ttl: Duration::from_secs(400),
            negative_ttl: Duration::from_secs(400),
            ..Settings::default()
        });
        let renew = || async { renewing(valid("alice"), "session=t; Max-Age=60") };
        let first = cache.lookup(&cookie("t"), renew).await;
        assert_eq!(first.origin, Origin::Miss);
        assert_eq!(first.set_cookies, vec!["session=t; Max-Age=60".to_owned()]);
        // A hit replays the verdict, not the cookies.
        let hit = cache.lookup(&cookie("t"), renew).await;
        assert_eq!((hit.origin, hit.set_cookies), (Origin::Hit, Vec::new()));
        // A fresh invalid answer clears the cookie for its own Check, and only for it.
        advance(400);
        let clear = || async { renewing(Verdict::Invalid, "session=; Max-Age=0") };
        let revoked = cache.lookup(&cookie("t"), clear).await;
        assert_eq!(
            revoked,
            Answered {
                verdict: Verdict::Invalid,
                origin: Origin::Miss,
                set_cookies: vec!["session=; Max-Age=0".to_owned()],
            }
        );
        let hit = cache.lookup(&cookie("t"), clear).await;
        assert_eq!((hit.origin, hit.set_cookies), (Origin::Hit, Vec::new()));
    }

    #[tokio::test]
    async fn a_coalesced_check_gets_no_set_cookies() {
        let cache = DecisionCache::new(Settings::default());
        let release = tokio::sync::Notify::new();
        let token = cookie("t");
        let leader = cache.lookup(&token, || async {
            release.notified().await;
            renewing(valid("alice"), "session=t; Max-Age=60")
        });
        let follower = cache.lookup(&token, || async {
            renewing(valid("alice"), "session=t; Max-Age=60")
        });
        // Polled in order on this one thread: the leader waits in its call, the follower
        // waits for the leader's, then the call is let go.
        let (leader, follower, ()) = tokio::join!(leader, follower, async {
            release.notify_one();
        });
        assert_eq!(leader.origin, Origin::Miss);
        assert_eq!(leader.set_cookies.len(), 1);
        assert_eq!(
            (follower.origin, follower.set_cookies),
            (Origin::Coalesced, Vec::new())
        );
    }

    #[tokio::test]
    async fn a_stale_allow_gets_no_set_cookies() {
        let cache = DecisionCache::new(Settings {
            ttl: Duration::ZERO,
            negative_ttl: Duration::ZERO,
            stale_if_error: Duration::from_secs(60),
            ..Settings::default()
        });
        let renew = || async { renewing(valid("alice"), "session=t; Max-Age=60") };
        assert_eq!(cache.lookup(&cookie("t"), renew).await.set_cookies.len(), 1);
        let err = || async { Reply::from(Verdict::Error(ValidatorError::Timeout)) };
        let stale = cache.lookup(&cookie("t"), err).await;
        assert_eq!(
            stale,
            Answered {
                verdict: valid("alice"),
                origin: Origin::Stale,
                set_cookies: Vec::new(),
            }
        );
    }
}
