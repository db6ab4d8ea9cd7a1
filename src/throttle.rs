//! A gate for a log line that a failure would repeat on every request (an outage, a broken
//! route): at most one line per interval, and how many were held back since the last one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Lets one line through per `interval`; lock-free, shared by every Check.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    epoch: Instant,
    /// When the last line went through (ms since `epoch`); `u64::MAX` before the first.
    last: AtomicU64,
    /// Lines held back since then.
    held_back: AtomicUsize,
}

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            epoch: Instant::now(),
            last: AtomicU64::new(u64::MAX),
            held_back: AtomicUsize::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line is due now; `None` (and one
    /// more held back) otherwise. Of callers racing for the same turn, one wins.
    pub fn due(&self) -> Option<usize> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let every = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        let last = self.last.load(Ordering::Relaxed);
        let turn = last == u64::MAX || now.saturating_sub(last) >= every;
        if turn
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.due(), Some(0));
        assert_eq!(throttle.due(), None);
        assert_eq!(throttle.due(), None);
        // Due again once the interval has passed (here: at once).
        let open = Throttle::new(Duration::ZERO);
        assert_eq!(open.due(), Some(0));
        assert_eq!(open.due(), Some(0));
        // What was held back is told with the next line.
        throttle.last.store(0, Ordering::Relaxed);
        let late = Throttle {
            epoch: Instant::now() - Duration::from_secs(7200),
            ..throttle
        };
        assert_eq!(late.due(), Some(2));
    }
}
