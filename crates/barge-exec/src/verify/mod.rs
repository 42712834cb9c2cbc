//! Verification, reusing the copy's key ranges and hashing: target digests (read by the same
//! reader → rayon path, or while the key builds) compared with the source digests taken while
//! copying; mismatched ranges narrowed down to keys.

pub(crate) mod buckets;
pub(crate) mod digest;
pub(crate) mod overlap;
pub(crate) mod run;
pub(crate) mod shared;
pub(crate) mod table;
pub(crate) mod transformed;
