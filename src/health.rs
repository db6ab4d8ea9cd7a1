//! Whether the validator answers: a state machine with hysteresis, fed by every validator call
//! (Checks and probes) and read by the named gRPC health.

use tokio::sync::watch;

/// Consecutive validator failures that turn the named health NOT_SERVING.
pub const FAILURES_TO_UNHEALTHY: u32 = 5;
/// Consecutive validator answers that turn it SERVING again.
pub const SUCCESSES_TO_HEALTHY: u32 = 3;

/// Whether the validator answers, with hysteresis so that one blip does not flap the health.
#[derive(Debug)]
pub struct ValidatorHealth {
    run: std::sync::Mutex<(bool, u32)>,
    changed: watch::Sender<bool>,
}

impl Default for ValidatorHealth {
    fn default() -> Self {
        Self {
            run: std::sync::Mutex::new((true, 0)),
            changed: watch::channel(true).0,
        }
    }
}

impl ValidatorHealth {
    /// Records one validator call: `true` for an answer (valid or invalid), `false` for an error.
    pub fn record(&self, answered: bool) {
        let Ok(mut run) = self.run.lock() else {
            return;
        };
        let (healthy, streak) = &mut *run;
        if answered == *healthy {
            *streak = 0;
            return;
        }
        *streak += 1;
        let needed = if *healthy {
            FAILURES_TO_UNHEALTHY
        } else {
            SUCCESSES_TO_HEALTHY
        };
        if *streak >= needed {
            *healthy = answered;
            *streak = 0;
            self.changed.send_replace(answered);
            if answered {
                tracing::info!("validator answering again; health SERVING");
            } else {
                tracing::warn!(
                    failures = needed,
                    "validator failing; health of the Authorization service NOT_SERVING"
                );
            }
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy(health: &ValidatorHealth) -> bool {
        *health.subscribe().borrow()
    }

    fn record_n(health: &ValidatorHealth, answered: bool, times: u32) {
        for _ in 0..times {
            health.record(answered);
        }
    }

    #[test]
    fn turns_unhealthy_on_the_fifth_failure_in_a_row() {
        let health = ValidatorHealth::default();
        assert!(healthy(&health));
        record_n(&health, false, FAILURES_TO_UNHEALTHY - 1);
        assert!(healthy(&health), "4 failures are a blip");
        health.record(false);
        assert!(!healthy(&health), "the 5th turns it unhealthy");
    }

    #[test]
    fn turns_healthy_on_the_third_answer_in_a_row() {
        let health = ValidatorHealth::default();
        record_n(&health, false, FAILURES_TO_UNHEALTHY);
        record_n(&health, true, SUCCESSES_TO_HEALTHY - 1);
        assert!(!healthy(&health), "2 answers are not enough");
        health.record(true);
        assert!(healthy(&health), "the 3rd turns it healthy");
    }

    #[test]
    fn an_interleaved_outcome_restarts_the_streak() {
        let health = ValidatorHealth::default();
        record_n(&health, false, FAILURES_TO_UNHEALTHY - 1);
        health.record(true);
        record_n(&health, false, FAILURES_TO_UNHEALTHY - 1);
        assert!(healthy(&health), "a success resets the failure streak");
        health.record(false);
        assert!(!healthy(&health));

        record_n(&health, true, SUCCESSES_TO_HEALTHY - 1);
        health.record(false);
        record_n(&health, true, SUCCESSES_TO_HEALTHY - 1);
        assert!(!healthy(&health), "a failure resets the success streak");
        health.record(true);
        assert!(healthy(&health));
    }

    #[test]
    fn subscribers_see_each_change() {
        let health = ValidatorHealth::default();
        let mut changes = health.subscribe();
        record_n(&health, false, FAILURES_TO_UNHEALTHY);
        assert!(changes.has_changed().unwrap());
        assert!(!*changes.borrow_and_update());
        record_n(&health, false, 10);
        assert!(
            !changes.has_changed().unwrap(),
            "no news while it stays down"
        );
        record_n(&health, true, SUCCESSES_TO_HEALTHY);
        assert!(*changes.borrow_and_update());
    }
}
