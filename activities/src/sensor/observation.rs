//! The roll-out observations that carry no status read from the cluster: the cluster could not
//! be observed (an answer, not a failure: the workflow looks again), or it answered with an error
//! about the sensor's objects (a roll-out that is not coming up, and why). Shared by ECS and
//! Kubernetes.

use qflows_workflows::sensor::model::{RolloutObservation, RolloutStatus};
use std::fmt::Display;

/// The cluster could not be observed (unreachable, overloaded, refusing qflows' identity): why.
pub(super) fn unobservable(why: &impl Display) -> RolloutObservation {
    RolloutObservation {
        status: None,
        unobservable: Some(why.to_string()),
        reason: None,
    }
}

/// Reading the roll-out failed with `e`: unobservable when `cluster_unobservable`, otherwise a
/// roll-out with nothing ready that is not done, and `e` as the reason.
pub(super) fn from_error(e: &impl Display, cluster_unobservable: bool) -> RolloutObservation {
    if cluster_unobservable {
        return unobservable(e);
    }
    RolloutObservation {
        status: Some(RolloutStatus {
            desired: 0,
            ready: 0,
            updated: 0,
            done: false,
        }),
        unobservable: None,
        reason: Some(e.to_string()),
    }
}
