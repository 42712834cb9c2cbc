//! End-to-end tests through the real `barge` binary: the CLI contract (arguments, JSON, exit codes)
//! and SQLite → SQLite copies and verification. Each test works in its own temporary directory.

mod bad_input;
mod copy;
mod support;
mod verify;
