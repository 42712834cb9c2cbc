//! The three stages of a table copy, in data-path order, joined by bounded channels:
//!
//! ```text
//!  read (plain threads, ≤ workers) ──▶ cpu (rayon: transform, hash, encode) ──▶ write (plain threads)
//! ```
//!
//! [`pass`] wires one pass over a set of ranges; [`read`] alone (with a hashing sink) also serves
//! verification.

pub(crate) mod budget;
pub(crate) mod cpu;
pub(crate) mod pass;
pub(crate) mod read;
pub(crate) mod write;
