//! Probes the validator in the background while its health is down.
//!
//! Validator health is otherwise learnt only from Checks, but once the named health turns
//! NOT_SERVING Envoy sends this replica no more Checks: without a probe it would stay out for
//! good after the validator recovered. The probe runs only while the validator counts as
//! unhealthy, so a healthy service adds no load to the auth service.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::contract::Verdict;
use crate::health::ValidatorHealth;
use crate::validator::Validator;

/// Time between probes while the validator counts as unhealthy; with
/// [`crate::health::SUCCESSES_TO_HEALTHY`] answers needed, health returns about 3 s after the
/// validator does.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Records credential-less validator calls into the health while it is down.
#[derive(Debug)]
pub struct Prober {
    validator: Validator,
    health: Arc<ValidatorHealth>,
    interval: Duration,
}

impl Prober {
    pub fn new(validator: Validator, health: Arc<ValidatorHealth>, interval: Duration) -> Self {
        Self {
            validator,
            health,
            interval,
        }
    }

    /// Probes whenever the validator is unhealthy, until `stop` turns true or its sender goes.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => {}
            () = self.probe_while_down() => {}
        }
    }

    async fn probe_while_down(&self) {
        let mut healthy = self.health.subscribe();
        loop {
            if healthy.wait_for(|ok| !*ok).await.is_err() {
                return;
            }
            tracing::info!(interval = ?self.interval, "probing the validator until it answers");
            while !*healthy.borrow_and_update() {
                tokio::time::sleep(self.interval).await;
                // An answer of either kind (valid or not) shows the validator works.
                let verdict = self.validator.probe().await;
                self.health.record(!matches!(verdict, Verdict::Error(_)));
            }
        }
    }
}
