//! `qflows-bench`: the benchmark and chaos harness of qflows, kept out of the product binary.
//!
//! Every benchmark starts what it needs on this machine (an in-memory or on-disk Temporal dev
//! server, the Qualys emulator, the bridge, the worker in this process or as a
//! `qflows-bench worker` child) and prints figures; none asserts a speed. The product crates
//! (`qflows`, `qflows-workflows`, `qflows-activities`) are used as libraries, unchanged.
//!
//! | Command | Module |
//! |---|---|
//! | `qflows-bench admission` | [`admission`] |
//! | `qflows-bench scan` | [`scan`] (also the shared set-up: [`scan::BenchEnv`]) |
//! | `qflows-bench bridge` | [`bridge`] |
//! | `qflows-bench burst`, `chaos` | [`chaos`] |
//! | `qflows-bench overhead` | [`overhead`] |
//! | `qflows-bench cost` | [`cost`] |
//! | `qflows-bench policy` | [`policy`] |
//! | `qflows-bench qscanner-report` | [`qscanner_report`] |
//! | `qflows-bench worker` (the baseline's worker) | [`worker`], [`noop`] (`BenchNoop`) |

pub mod admission;
pub mod bridge;
pub mod certs;
pub mod chaos;
pub mod cost;
pub mod noop;
pub mod overhead;
pub mod policy;
pub mod qscanner_report;
pub mod scan;
pub mod scraped;
pub mod worker;
