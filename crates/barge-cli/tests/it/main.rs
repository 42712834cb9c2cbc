//! End-to-end tests through the real `barge` binary: the CLI contract (arguments, JSON, exit codes)
//! and copies and verification across engines. Each test works in its own temporary directory and,
//! against PostgreSQL, its own uniquely named database, dropped afterwards.

mod bad_input;
mod bench;
mod browser;
mod copy;
mod deploy;
mod distributed;
mod durability;
mod faults;
mod mappings;
mod matrix;
mod migrate;
mod mysql;
mod pipeline;
mod postgres;
mod private;
mod schema;
mod snapshot;
mod support;
mod sync;
mod verify;
mod versions;
