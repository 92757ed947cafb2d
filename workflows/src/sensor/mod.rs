//! The sensor area: `DeploySensor` (`deploy`), the activities it calls ([`contracts`],
//! implemented in `activities/src/sensor/`), and the data it exchanges ([`model`]).

pub mod contracts;
pub(crate) mod deploy;
pub mod model;
