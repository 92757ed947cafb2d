//! Activity options the workflows share.

use std::time::Duration;
use temporalio_common::RetryPolicy;
use temporalio_sdk::{ActivityCloseTimeouts, ActivityOptions, LocalActivityOptions};

/// Exponential backoff from 1 s to 60 s, without an attempt limit: transient failures
/// (throttling, 5xx, timeouts) are retried; activities mark permanent ones non-retryable.
pub fn backoff() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_secs(1))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(60))
        .build()
}

/// An activity with [`backoff`], `start_to_close_secs` per attempt and `schedule_to_close_secs`
/// in all.
pub fn retrying(start_to_close_secs: u64, schedule_to_close_secs: u64) -> ActivityOptions {
    ActivityOptions::with_close_timeouts(ActivityCloseTimeouts::ScheduleAndStartToClose {
        schedule_to_close: Duration::from_secs(schedule_to_close_secs),
        start_to_close: Duration::from_secs(start_to_close_secs),
    })
    .retry_policy(backoff())
    .build()
}

/// `options` with a heartbeat timeout, for activities that heartbeat while they wait: a worker
/// that dies mid-attempt is noticed after `heartbeat_timeout_secs` and the attempt retried.
pub fn heartbeating(mut options: ActivityOptions, heartbeat_timeout_secs: u64) -> ActivityOptions {
    options.heartbeat_timeout = Some(Duration::from_secs(heartbeat_timeout_secs));
    options
}

/// A local activity with [`backoff`], `start_to_close_secs` per attempt and
/// `schedule_to_close_secs` in all.
pub fn local(start_to_close_secs: u64, schedule_to_close_secs: u64) -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(start_to_close_secs))
        .schedule_to_close_timeout(Duration::from_secs(schedule_to_close_secs))
        .retry_policy(backoff())
        .build()
}

/// A QScanner run: `start_to_close_secs` per attempt (its own time limit and some slack),
/// `schedule_to_close_secs` in all, at most three attempts.
pub fn qscanner_run(start_to_close_secs: u64, schedule_to_close_secs: u64) -> ActivityOptions {
    ActivityOptions::with_close_timeouts(ActivityCloseTimeouts::ScheduleAndStartToClose {
        schedule_to_close: Duration::from_secs(schedule_to_close_secs),
        start_to_close: Duration::from_secs(start_to_close_secs),
    })
    // A crashed worker is noticed within a minute, not at the end of the scan's time limit.
    .heartbeat_timeout(Duration::from_secs(60))
    .retry_policy(
        RetryPolicy::builder()
            .initial_interval(Duration::from_secs(5))
            .backoff_coefficient(2.0)
            .maximum_attempts(3)
            .build(),
    )
    .build()
}
