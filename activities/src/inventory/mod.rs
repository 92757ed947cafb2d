//! The activity behind `Inventory`: list what runs in a scope, store it, tell the entities.

pub mod list;
