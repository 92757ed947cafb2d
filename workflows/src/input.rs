//! Turning a workflow's raw JSON input into its typed form, with errors that name the bad field.
//!
//! Workflows take a [`serde_json::Value`] and convert it here rather than letting the SDK
//! deserialise the typed input: the SDK fails the *workflow task* on a serde error, loses the
//! message and retries forever (see `research/temporal-rust-sdk.md`). Converting in workflow code
//! lets a malformed input end the workflow at once with a non-retryable `InvalidInput` failure.

use serde::de::DeserializeOwned;
use std::fmt;

/// Why an input was rejected: which field and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// JSON path of the offending field (`.` for the document itself).
    pub field: String,
    /// What was wrong, in words a user can act on.
    pub problem: String,
}

impl InputError {
    /// An error about one named field.
    pub fn field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field == "." {
            write!(f, "invalid input: {}", self.problem)
        } else {
            write!(f, "invalid input field `{}`: {}", self.field, self.problem)
        }
    }
}

impl std::error::Error for InputError {}

/// Inputs that check more than their JSON shape.
pub trait Validate {
    /// Checks values (formats, ranges) after deserialisation.
    fn validate(&self) -> Result<(), InputError>;
}

/// Deserialises and validates a workflow input, naming the field that is wrong.
pub fn parse<T: DeserializeOwned + Validate>(value: serde_json::Value) -> Result<T, InputError> {
    let parsed: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let mut problem = e.inner().to_string();
        // serde_json appends " at line L column C", meaningless for a Value: drop it.
        if let Some(i) = problem.find(" at line ") {
            problem.truncate(i);
        }
        InputError::field(path, problem)
    })?;
    parsed.validate()?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Probe {
        account_id: String,
        #[serde(default)]
        n: u32,
    }
    impl Validate for Probe {
        fn validate(&self) -> Result<(), InputError> {
            if self.account_id.is_empty() {
                return Err(InputError::field("accountId", "must not be empty"));
            }
            Ok(())
        }
    }

    #[test]
    fn names_missing_wrong_and_unknown_fields() {
        let e = parse::<Probe>(json!({})).unwrap_err();
        assert_eq!(e.to_string(), "invalid input: missing field `accountId`");
        assert_eq!(parse::<Probe>(json!({"accountId": "1"})).unwrap().n, 0);
        let e = parse::<Probe>(json!({"accountId": "1", "n": "x"})).unwrap_err();
        assert_eq!(e.field, "n");
        assert!(e.problem.contains("invalid type"), "{e}");
        let e = parse::<Probe>(json!({"accountId": "1", "bogus": 1})).unwrap_err();
        assert!(e.problem.contains("unknown field `bogus`"), "{e}");
        let e = parse::<Probe>(json!({"accountId": ""})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid input field `accountId`: must not be empty"
        );
        assert!(parse::<Probe>(json!({"accountId": "1"})).is_ok());
    }
}
