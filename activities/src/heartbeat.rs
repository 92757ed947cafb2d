//! Heartbeating while an activity waits on something slow (Qualys, another workflow).
//!
//! An attempt whose worker dies is retried by the server only when the attempt times out. An
//! activity that heartbeats is given a short heartbeat timeout by its workflow, so the attempt
//! of a killed worker is retried within that timeout instead of at the end of a start-to-close
//! limit sized for the slowest honest attempt (Qualys throttling, paging a big report).

use std::future::Future;
use std::time::Duration;
use temporalio_sdk::activities::ActivityContext;

/// How often [`beating`] heartbeats: well inside the shortest heartbeat timeout the workflows
/// give (20 s), and the SDK throttles what reaches the server anyway.
pub const EVERY: Duration = Duration::from_secs(5);

/// Runs `work` to its end, heartbeating `detail` every [`EVERY`] meanwhile. The first beat
/// comes after [`EVERY`], not at once: a call that ends sooner sends none (a heartbeat that
/// reaches the server is a billed action).
pub async fn beating<F: Future>(ctx: &ActivityContext, detail: &str, work: F) -> F::Output {
    tokio::pin!(work);
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = beat.tick() => {
                // A heartbeat that cannot be sent costs nothing here: the server times the
                // attempt out and retries it, which is what a lost heartbeat means anyway.
                let _ = ctx.record_heartbeat(detail.to_string()).await;
            }
        }
    }
}
