//! Waiting on conditions, never on fixed sleeps: a slow machine takes longer, it does not fail.

use std::net::SocketAddr;
use std::time::Duration;

/// Polls `probe` until it yields a value or `limit` passes.
pub async fn eventually<T, F, Fut>(limit: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until something accepts connections on `addr`; panics after 20 s.
pub async fn listening(addr: SocketAddr) {
    eventually(Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(drop)
    })
    .await
    .unwrap_or_else(|| panic!("nothing listens on {addr}"));
}

/// Whether `condition` stays true for all of `window` (checked every 100 ms; false at the first
/// time it is not): for what must *not* happen, which only a window of time can show.
pub async fn holds_for(window: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + window;
    loop {
        if !condition() {
            return false;
        }
        if tokio::time::Instant::now() >= deadline {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
