//! Turning failures into workflow results that say what went wrong.
//!
//! An activity failure reaches a workflow as "Activity task failed" with the real reason in its
//! cause chain. Workflows end with the cause's own message and type instead, so that
//! `temporal workflow show` and the UI print e.g. `QualysAuthFailed: Qualys rejected the
//! username/password` rather than a generic wrapper.

use crate::FailureType;
use crate::input::InputError;
use temporalio_common::error::IncomingError;
use temporalio_sdk::{ActivityExecutionError, ApplicationFailure, WorkflowTermination};

/// Ends a workflow because its input was malformed: non-retryable, type
/// [`FailureType::InvalidInput`].
pub fn invalid_input(err: InputError) -> WorkflowTermination {
    ApplicationFailure::builder(err)
        .type_name(FailureType::InvalidInput.into())
        .non_retryable(true)
        .build()
        .into()
}

/// Ends a workflow because an activity failed for good, surfacing the root cause.
pub fn activity_failed(step: &str, err: ActivityExecutionError) -> WorkflowTermination {
    let (message, type_name) = match err.cause() {
        Some(cause) => describe(cause),
        None => (err.to_string(), None),
    };
    ApplicationFailure::builder(format!("{step}: {message}"))
        .maybe_type_name(type_name)
        .non_retryable(true)
        .build()
        .into()
}

/// The root cause's message of an activity failure (not the generic "Activity task failed").
pub fn root_message(err: &ActivityExecutionError) -> String {
    match err.cause() {
        Some(cause) => cause.failure().message.clone(),
        None => err.to_string(),
    }
}

/// Whether an activity ended because a timeout ran out (for a poll, the wait's deadline).
pub fn is_timeout(err: &ActivityExecutionError) -> bool {
    matches!(err.cause(), Some(IncomingError::Timeout(_)))
}

/// The application failure type of an activity's last failure, if it is one of qflows'.
pub fn failure_type(err: &ActivityExecutionError) -> Option<FailureType> {
    match err.cause() {
        Some(IncomingError::Application(app)) => app.type_name().and_then(FailureType::from_name),
        _ => None,
    }
}

fn describe(cause: &IncomingError) -> (String, Option<String>) {
    match cause {
        IncomingError::Application(app) => (
            app.failure().map(|f| f.message.clone()).unwrap_or_default(),
            app.type_name().map(str::to_string),
        ),
        IncomingError::Timeout(_) => (
            format!("timed out ({})", cause.failure().message),
            Some(FailureType::ActivityTimeout.into()),
        ),
        other => (other.failure().message.clone(), None),
    }
}
