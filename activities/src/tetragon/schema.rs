//! Validation of TracingPolicy objects against Tetragon's CRD schema (being written).

// Temporary stand-ins until the validator lands (replaced wholesale by it).
/// One reason a policy would be refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON path.
    pub path: String,
    /// Message.
    pub message: String,
}
impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}
/// Validates a policy object.
pub fn validate(_policy: &serde_json::Value) -> Result<(), Vec<Violation>> {
    Ok(())
}
/// Oldest Tetragon release accepting the policy.
pub fn min_tetragon_version(_policy: &serde_json::Value) -> (u32, u32) {
    (0, 11)
}
