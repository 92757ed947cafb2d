//! The validator's one output type (a leaf every layer reports into).

/// One reason a policy would be refused, with the JSON path (e.g. `spec.kprobes[0].selectors[0].matchActions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where in the object: dot-separated field names, `[n]` for list items, `[key]` for map entries.
    pub path: String,
    /// Why it would be refused (for CEL rules: the CRD's own message).
    pub message: String,
}

impl Violation {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}
