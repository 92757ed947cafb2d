//! [`Seen`]: a container as a platform's listing reports it, before its digest is settled.

/// A container as a platform lists it, before its digest is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The image reference, as listed (not yet cut).
    pub image: String,
    /// Where it runs (not yet cut).
    pub place: String,
    /// The digest the platform reports, unchecked.
    pub reported: Option<String>,
    /// Why nothing it says may be used (e.g. its resource ID was refused).
    pub refused: Option<String>,
}
