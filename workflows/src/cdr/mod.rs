//! The CDR area: `CdrToPolicy` ([`to_policy`]), the activities it calls ([`contracts`],
//! implemented in `activities/src/cdr/`), the types it exchanges ([`model`]), and what it reasons
//! about ([`evidence`]: categories, workloads, evidence, review state).

pub mod contracts;
pub mod evidence;
pub mod model;
pub mod to_policy;
