//! Validation of TracingPolicy objects against Tetragon's CRD schema (being written).
