//! Subcommands. Each file parses its own arguments and calls into the library.

pub mod agent;
pub mod ipam;
pub mod keys;
pub mod landscape;
pub mod run;
pub mod shoot;
pub mod status;
