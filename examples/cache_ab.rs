//! The decision cache's candidates side by side (issue 13, item 1): instructions per hit and per
//! miss-with-eviction, resident memory for 100 000 entries, spray resistance and coalescing
//! behaviour, for moka (as `src/cache.rs` configures it, and variations) and quick_cache.
//!
//! One variant and one phase per process, so that nothing one candidate allocated or warmed
//! changes another's figure:
//!
//! ```text
//! cache_ab VARIANT hit|miss N     N operations (16 tasks on 2 workers), then exit
//! cache_ab VARIANT rss            VmRSS growth for 100 000 entries
//! cache_ab VARIANT spray          a real user's hits during a 100 000-token spray
//! cache_ab VARIANT coalesce       coalescing: a failing call, a cancelled caller
//! cache_ab --count [N]            everything above for every variant, as a table
//! ```
//!
//! `--count` runs each `hit`/`miss` process under valgrind's callgrind twice, with N and 2N
//! operations, and divides the difference in instructions (all threads) by N: start-up, the
//! runtime, filling the cache to capacity and its table growth cancel out.

// A measuring tool: a failure should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Same shape as the service's `Verdict` (an `Identity` is one `Arc<str>`).
#[derive(Clone, Debug)]
#[allow(dead_code)] // Only `Valid` is built; the others give the enum its real size.
enum Verdict {
    Valid(Arc<str>),
    Invalid,
    Error(u8),
}

/// Same shape as the service's cache `Entry`.
#[derive(Clone, Debug)]
struct Entry {
    verdict: Verdict,
    expires: Instant,
}

/// What a fetch returns on failure (the service's `ValidatorError` stand-in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Failed;

/// The service's longest answer life (`cache_ttl` 10 s), moka's cache-wide time-to-live.
const TTL: Duration = Duration::from_secs(10);
/// Concurrent tasks driving the cache, on [`WORKERS`] runtime threads.
const TASKS: usize = 16;
const WORKERS: usize = 2;
/// Capacity for the miss phase and the spray: small, so every insert evicts.
const SMALL: u64 = 1_000;
/// Capacity for the hit phase and the memory figure (the service's default).
const LARGE: u64 = 100_000;

/// A fresh entry, built the way a miss builds one: its own identity allocation, its deadline.
fn entry() -> Entry {
    Entry {
        verdict: Verdict::Valid(Arc::from("alice")),
        expires: Instant::now() + TTL,
    }
}

/// The `i`th distinct key, spread over the whole range like the service's SipHash keys.
fn key(i: u64) -> u128 {
    u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) ^ 0x5bd1_e995
}

/// A hasher for keys that already are keyed pseudo-random 128-bit values (the service's SipHash
/// keys): folds the two halves, nothing more. Without the secret nobody can choose keys that
/// collide here either.
#[derive(Clone, Copy, Default)]
struct KeyHash(u64);

impl std::hash::Hasher for KeyHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed here (through `write_u128`); this is the fallback.
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(word)).rotate_left(29);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 ^= (key as u64) ^ ((key >> 64) as u64);
    }
}

type KeyHasher = std::hash::BuildHasherDefault<KeyHash>;

#[derive(Clone)]
enum Variant {
    /// No cache: the harness's own cost per operation (building and dropping an entry on a
    /// miss, a clone of one on a hit).
    Baseline(Arc<Entry>),
    /// As `src/cache.rs`: `max_capacity` and one cache-wide `time_to_live`.
    MokaFuture(moka::future::Cache<u128, Entry>),
    /// The same, but an LRU instead of TinyLFU admission.
    MokaFutureLru(moka::future::Cache<u128, Entry>),
    /// As `src/cache.rs`, but no time-to-live: only the size bounds the entries.
    MokaFutureNoTtl(moka::future::Cache<u128, Entry>),
    /// As `src/cache.rs`, hashing keys with [`KeyHash`] instead of SipHash-1-3.
    MokaFutureKeyHash(moka::future::Cache<u128, Entry, KeyHasher>),
    /// moka's blocking cache, as `src/cache.rs` configures the async one.
    MokaSync(moka::sync::Cache<u128, Entry>),
    /// quick_cache's concurrent cache, coalescing through its placeholder guards.
    Quick(Arc<quick_cache::sync::Cache<u128, Entry>>),
    /// The same, hashing keys with [`KeyHash`] instead of ahash.
    QuickKeyHash(Arc<QuickKeyHash>),
}

type QuickKeyHash = quick_cache::sync::Cache<
    u128,
    Entry,
    quick_cache::UnitWeighter,
    KeyHasher,
    quick_cache::sync::DefaultLifecycle<u128, Entry>,
>;

/// One body per kind of cache: the moka future caches share one (whatever their hasher), the
/// quick_cache ones another.
macro_rules! each {
    ($variant:expr, $base:pat => $b:expr, moka $m:ident => $mb:expr, sync $s:ident => $sb:expr, quick $q:ident => $qb:expr) => {
        match $variant {
            Variant::Baseline($base) => $b,
            Variant::MokaFuture($m) | Variant::MokaFutureLru($m) | Variant::MokaFutureNoTtl($m) => {
                $mb
            }
            Variant::MokaFutureKeyHash($m) => $mb,
            Variant::MokaSync($s) => $sb,
            Variant::Quick($q) => $qb,
            Variant::QuickKeyHash($q) => $qb,
        }
    };
}

const VARIANTS: [&str; 8] = [
    "baseline",
    "moka-future",
    "moka-future-lru",
    "moka-future-nottl",
    "moka-future-keyhash",
    "moka-sync",
    "quick-cache",
    "quick-cache-keyhash",
];

impl Variant {
    fn new(name: &str, capacity: u64) -> Self {
        use moka::policy::EvictionPolicy;
        match name {
            "baseline" => Variant::Baseline(Arc::new(entry())),
            "moka-future" => Variant::MokaFuture(
                moka::future::Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(TTL)
                    .build(),
            ),
            "moka-future-lru" => Variant::MokaFutureLru(
                moka::future::Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(TTL)
                    .eviction_policy(EvictionPolicy::lru())
                    .build(),
            ),
            "moka-future-nottl" => Variant::MokaFutureNoTtl(
                moka::future::Cache::builder()
                    .max_capacity(capacity)
                    .build(),
            ),
            "moka-future-keyhash" => Variant::MokaFutureKeyHash(
                moka::future::Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(TTL)
                    .build_with_hasher(KeyHasher::default()),
            ),
            "moka-sync" => Variant::MokaSync(
                moka::sync::Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(TTL)
                    .build(),
            ),
            "quick-cache" => Variant::Quick(Arc::new(quick_cache::sync::Cache::new(
                usize::try_from(capacity).unwrap(),
            ))),
            "quick-cache-keyhash" => Variant::QuickKeyHash(Arc::new(QuickKeyHash::with(
                usize::try_from(capacity).unwrap(),
                capacity,
                quick_cache::UnitWeighter,
                KeyHasher::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            ))),
            other => panic!("unknown variant {other}; one of {VARIANTS:?}"),
        }
    }

    async fn insert(&self, key: u128, value: Entry) {
        each!(self,
            _ => drop(value),
            moka c => c.insert(key, value).await,
            sync c => c.insert(key, value),
            quick c => c.insert(key, value))
    }

    /// A lookup as a Check's hit does it.
    async fn get(&self, key: u128) -> Option<Entry> {
        each!(self,
            e => Some(Entry::clone(e)),
            moka c => c.get(&key).await,
            sync c => c.get(&key),
            quick c => c.get(&key))
    }

    /// A lookup as a Check does it: the cached entry, or `fetch`'s, through the crate's
    /// coalescing API (moka as `src/cache.rs`: a `get`, then `entry().or_try_insert_with`).
    /// The flag says whether this caller's own `fetch` ran.
    async fn lookup<F, Fut>(&self, key: u128, fetch: F) -> (Result<Entry, Failed>, bool)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Entry, Failed>>,
    {
        each!(self,
        _ => (fetch().await, true),
        moka c => {
            if let Some(hit) = c.get(&key).await {
                return (Ok(hit), false);
            }
            match c.entry(key).or_try_insert_with(fetch()).await {
                Ok(e) => {
                    let own = e.is_fresh();
                    (Ok(e.into_value()), own)
                }
                Err(err) => (Err(*err), false),
            }
        },
        // moka's blocking `or_try_insert_with` cannot await a fetch: it runs a closure on
        // the calling thread. Here the fetch is awaited first, outside the entry API, so
        // nothing coalesces; the service could not do otherwise with a validator call.
        sync c => {
            if let Some(hit) = c.get(&key) {
                return (Ok(hit), false);
            }
            let ready = fetch().await;
            match c.entry(key).or_try_insert_with(|| ready) {
                Ok(e) => {
                    let own = e.is_fresh();
                    (Ok(e.into_value()), own)
                }
                Err(err) => (Err(*err), false),
            }
        },
        quick c => match c.get_value_or_guard_async(&key).await {
            Ok(hit) => (Ok(hit), false),
            Err(guard) => match fetch().await {
                Ok(value) => {
                    // Err only if the placeholder was removed meanwhile (`remove`, a
                    // plain `insert` of the key): the caller still has its answer.
                    let _ = guard.insert(value.clone());
                    (Ok(value), true)
                }
                // The guard drops uninserted: the next waiter becomes the loader.
                Err(err) => (Err(err), true),
            },
        })
    }

    /// Entries held, after the crate's pending maintenance.
    async fn settled_len(&self) -> u64 {
        each!(self,
            _ => 0,
            moka c => {
                c.run_pending_tasks().await;
                c.entry_count()
            },
            sync c => {
                c.run_pending_tasks();
                c.entry_count()
            },
            quick c => c.len() as u64)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `n` operations, [`TASKS`] at a time; `op` gets the operation's index.
async fn drive<F, Fut>(n: usize, op: F)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let next = next.clone();
            let op = op.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    op(i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn hits(name: &str, n: usize) {
    let cache = Variant::new(name, LARGE);
    cache.insert(key(0), entry()).await;
    drive(n, move |_| {
        let cache = cache.clone();
        async move {
            // As the service's hit: the entry, still within its own deadline.
            let hit = cache.get(key(0)).await.expect("a hit missed");
            assert!(hit.expires > Instant::now() && matches!(hit.verdict, Verdict::Valid(_)));
            std::hint::black_box(hit);
        }
    })
    .await;
}

async fn misses(name: &str, n: usize) {
    let cache = Variant::new(name, SMALL);
    drive(n, move |i| {
        let cache = cache.clone();
        async move {
            let (got, own) = cache.lookup(key(i as u64), || async { Ok(entry()) }).await;
            assert!(got.is_ok() && own, "a distinct key was not a miss");
            std::hint::black_box(got.ok());
        }
    })
    .await;
}

/// Kibibytes resident, from the kernel's own count.
fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn rss(name: &str) {
    let before = vm_rss_kib();
    let cache = Variant::new(name, LARGE);
    for i in 0..LARGE {
        cache.insert(key(i), entry()).await;
    }
    let held = cache.settled_len().await;
    let grown = vm_rss_kib() - before;
    println!(
        "{name} rss: {:.1} MiB for {held} entries held of {LARGE} inserted",
        grown as f64 / 1024.0
    );
}

/// `src/cache.rs`'s `token_spray_stays_bounded_and_keeps_a_real_user`, counted instead of
/// asserted: the real user's misses while 100 000 junk tokens arrive, the user coming back
/// after every `every` of them (100 in the test; 5 000, five times the capacity, is where a
/// plain LRU loses the user). With `twice`, every junk token comes back once, 200 junk
/// lookups later: past a small admission window but within the memory of recently evicted keys,
/// as an attacker replaying its tokens could arrange.
async fn spray(name: &str, every: u64, twice: bool) {
    let cache = Variant::new(name, SMALL);
    let ok = || async { Ok(entry()) };
    let real = key(u64::MAX);
    for _ in 0..2 {
        assert!(cache.lookup(real, ok).await.0.is_ok());
    }
    let (mut lost, mut visits) = (0, 0);
    for i in 1..=100_000 {
        assert!(cache.lookup(key(i), ok).await.0.is_ok());
        if twice && i > 200 {
            assert!(cache.lookup(key(i - 200), ok).await.0.is_ok());
        }
        if i % every == 0 {
            visits += 1;
            if cache.lookup(real, ok).await.1 {
                lost += 1;
            }
        }
    }
    let held = cache.settled_len().await;
    let how = if twice { "twice" } else { "once" };
    println!(
        "{name} spray/{how}/{every}: real user missed {lost} of {visits}; {held} entries held (cap {SMALL})"
    );
}

/// Four Checks of one token at once, while the one call in flight fails; then the same with
/// the calling Check cancelled. Prints how many calls ran and what the Checks got.
async fn coalesce(name: &str) {
    for (case, cancel) in [("error", false), ("cancel", true)] {
        let cache = Variant::new(name, SMALL);
        let calls = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let start = |cache: Variant| {
            let calls = calls.clone();
            let release = release.clone();
            tokio::spawn(async move {
                let fetch = || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    release.acquire().await.unwrap().forget();
                    if cancel {
                        Ok(entry())
                    } else {
                        Err(Failed)
                    }
                };
                cache.lookup(key(7), fetch).await.0.is_ok()
            })
        };
        let leader = start(cache.clone());
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let waiters: Vec<_> = (0..3).map(|_| start(cache.clone())).collect();
        // Let the waiters join the call in flight.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if cancel {
            leader.abort();
        } else {
            release.add_permits(1);
        }
        // Every further call is let through as it starts.
        release.add_permits(100);
        let mut outcomes = Vec::new();
        if !cancel {
            outcomes.push(leader.await.unwrap());
        }
        for waiter in waiters {
            outcomes.push(waiter.await.unwrap());
        }
        let ok = outcomes.iter().filter(|ok| **ok).count();
        println!(
            "{name} coalesce/{case}: {} calls; {ok} Checks got a value, {} an error",
            calls.load(Ordering::SeqCst),
            outcomes.len() - ok
        );
    }
}

/// Instructions, all threads, of one run under callgrind (its `Collected :` line).
fn instructions(variant: &str, phase: &str, n: usize) -> u64 {
    let me = std::env::current_exe().unwrap();
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(me)
        .args([variant, phase, &n.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{variant} {phase} {n}: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find_map(|line| line.split_once("Collected :").map(|(_, n)| n.trim()))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {stderr}"))
}

fn count(n: usize) {
    println!("| variant | hit | miss + insert, evicting |");
    println!("|---|---:|---:|");
    for variant in VARIANTS {
        let per_op = |phase| {
            let once = instructions(variant, phase, n);
            let twice = instructions(variant, phase, 2 * n);
            (twice as f64 - once as f64) / n as f64
        };
        println!(
            "| {variant} | {:.0} | {:.0} |",
            per_op("hit"),
            per_op("miss")
        );
    }
    // The baseline holds nothing and coalesces nothing.
    for variant in &VARIANTS[1..] {
        for phase in ["rss", "spray", "coalesce"] {
            let out = Command::new(std::env::current_exe().unwrap())
                .args([variant, phase])
                .output()
                .unwrap();
            assert!(out.status.success(), "{variant} {phase}: {out:?}");
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args[..] {
        ["--count"] => count(20_000),
        ["--count", n] => count(n.parse().unwrap()),
        [variant, "hit", n] => runtime().block_on(hits(variant, n.parse().unwrap())),
        [variant, "miss", n] => runtime().block_on(misses(variant, n.parse().unwrap())),
        [variant, "rss"] => runtime().block_on(rss(variant)),
        [variant, "spray"] => runtime().block_on(async {
            for twice in [false, true] {
                spray(variant, 100, twice).await;
                spray(variant, 5_000, twice).await;
            }
        }),
        [variant, "coalesce"] => runtime().block_on(coalesce(variant)),
        _ => {
            eprintln!(
                "usage: cache_ab --count [N] | VARIANT hit|miss N | VARIANT rss|spray|coalesce"
            );
            std::process::exit(2);
        }
    }
}
