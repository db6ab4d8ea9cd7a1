//! Keeps one tokio timer always due soon, so that a request's own deadline (the validator call's
//! `validator_timeout`, the forward-auth door's header timeout) never has to wake the runtime.
//!
//! tokio wakes its parked I/O driver (an eventfd write, then a thread switch on the other core)
//! whenever a new timer falls due before every pending one. On a quiet replica each cache miss
//! set such a timer: one extra wakeup per miss, about 8 % of a miss's CPU at one Check at a
//! time (docs/benchmarks.md, "What the time-based figures were measuring", 2). A timer that is
//! always due within the shortest of those deadlines keeps every new deadline behind it, for one
//! wakeup per period.

use std::time::Duration;

use tokio::sync::watch;

/// The shortest period: below it the ticking would cost more than the wakeups it saves.
const SHORTEST: Duration = Duration::from_millis(10);
/// The longest period: one wakeup a second is nothing even for an idle sidecar.
const LONGEST: Duration = Duration::from_secs(1);

/// How often to tick so that a timer is always due before any of `deadlines` (the request
/// timeouts in use) would fall due.
pub fn period(deadlines: &[Duration]) -> Duration {
    deadlines
        .iter()
        .copied()
        .min()
        .unwrap_or(LONGEST)
        .clamp(SHORTEST, LONGEST)
}

/// Ticks every `period` until `stop` turns true or its sender goes.
pub async fn keep_one_due(period: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(period);
    // A late tick is not made up for: only the next deadline matters.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = ticks.tick() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_is_the_shortest_deadline_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(period(&[ms(5_000), ms(300)]), ms(300));
        assert_eq!(period(&[ms(1)]), SHORTEST);
        assert_eq!(period(&[ms(5_000), ms(60_000)]), LONGEST);
        assert_eq!(period(&[]), LONGEST);
    }

    #[tokio::test]
    async fn it_ticks_until_told_to_stop() {
        let (stop, stopped) = watch::channel(false);
        let ticking = tokio::spawn(keep_one_due(Duration::from_millis(10), stopped));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!ticking.is_finished());
        stop.send(true).unwrap();
        ticking.await.unwrap();
    }

    #[tokio::test]
    async fn it_stops_when_the_sender_goes() {
        let (stop, stopped) = watch::channel(false);
        let ticking = tokio::spawn(keep_one_due(Duration::from_millis(100), stopped));
        drop(stop);
        ticking.await.unwrap();
    }
}
