//! The registry area: `EnsureRegistry` and `EnsureAwsConnector` (`ensure`), the activities they
//! call ([`contracts`], implemented in `activities/src/registry/`), and the data they exchange with
//! the pure rules that name things ([`model`]).

pub mod contracts;
pub(crate) mod ensure;
pub mod model;
