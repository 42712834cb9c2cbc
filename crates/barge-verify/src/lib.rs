//! # barge-verify
//!
//! How barge proves that a target equals its source, independently of engine, batch boundaries
//! and worker scheduling.
//!
//! ```text
//!  RecordBatch ─▶ canonical bytes per row ─▶ blake3 ─▶ u128 row hash ─┐
//!                                                                     ├─▶ Digest { rows, sum mod 2^128 }
//!  range digests (source) ══ compare ══ range digests (target)        │     per key range
//!        mismatch ─▶ split the range, compare again ─▶ … ─▶ row diff: missing / extra / changed keys
//! ```
//!
//! ## The canonical encoding (a contract)
//!
//! Every engine must produce the same bytes for the same logical row, so this encoding is versioned
//! by this document: changing it changes every digest. A row is the concatenation of its values'
//! encodings in column order; each value is one tag byte followed by a payload:
//!
//! | tag | value class | Arrow types | payload |
//! |---|---|---|---|
//! | `0x00` | NULL | any, when null | none (so NULL differs from `''`, `0` and an empty list) |
//! | `0x01` | boolean | Boolean | one byte, 0 or 1 |
//! | `0x02` | integer | Int8…Int64, UInt8…UInt64 | i128, little-endian (every width encodes alike) |
//! | `0x03` | float | Float16/32/64 | f64 bits, little-endian; `-0.0` → `0.0`, every NaN → `0x7ff8000000000000`; f32 widened exactly |
//! | `0x04` | decimal | Decimal32/64/128/256 | value = m × 10^e with trailing zeros of m removed (0 is m=0, e=0): e as i32 LE, then m's minimal big-endian two's-complement bytes preceded by their count (u8); so `12.30` (scale 2) = `12.3` (scale 1). A decimal whose value is a whole number that fits an i128 is encoded as that integer (`0x02`), so `numeric(20,0)` 42 = `bigint` 42 |
//! | `0x05` | text | Utf8, LargeUtf8, Utf8View | length (u64 LE) + UTF-8 bytes, as stored (no trimming, no case folding) |
//! | `0x06` | bytes | Binary, LargeBinary, BinaryView, FixedSizeBinary | length (u64 LE) + bytes |
//! | `0x07` | date | Date32, Date64 | days since 1970-01-01, i32 LE |
//! | `0x08` | timestamp | Timestamp(any unit, any zone) | UTC microseconds since the epoch (i64 LE) + the sub-microsecond remainder in ns (u16 LE); a timestamp without a zone is taken as UTC |
//! | `0x0A` | list | List, LargeList | element count (u64 LE) + each element's encoding |
//! | `0x0C` | JSON | Utf8 marked `barge.logical = json` | length (u64 LE) + the document re-serialised with sorted keys and no insignificant whitespace (text that does not parse stays as it is), so PostgreSQL's `{"b": 1,  "a": 2}` = MySQL's `{"a": 2, "b": 1}` |
//! | `0x0B` | interval | Interval (all units); Time32, Time64 | months (i32 LE), then days × 24 h + nanoseconds as one i128 LE: a day is 24 hours as in PostgreSQL's interval equality (`'1 day'` = `'24 hours'`, so MySQL's TIME `-24:00:00` = `-1 day`), while months stay apart. A time of day is the interval since midnight (months 0): MySQL has one TIME type for durations and times of day, so PostgreSQL's `time '10:00'` = MySQL's TIME `10:00:00`. (Tag `0x09`, an earlier time-of-day encoding, is retired.) |
//!
//! Types with no row here (maps, structs, unions…) are refused by [`RowEncoder::new`] with
//! an error naming the column, never hashed approximately. Engines normalise to these classes when
//! they map native types to Arrow; any normalisation an engine needs (CHAR padding, JSON key order)
//! is documented next to its mapping table.
//!
//! ## Digests
//!
//! A row's hash is the first 16 bytes of `blake3(row bytes)` read as a little-endian u128. A
//! range's [`Digest`] is its row count and the sum of its row hashes modulo 2^128. A sum (not XOR)
//! means duplicate rows never cancel out; being commutative and associative, it does not depend on
//! row order, batch boundaries or how ranges were scheduled, and digests of adjacent ranges add up
//! to the digest of their union.
//!
//! Speed: the CPU time of a digest is mostly blake3 compressing a row's few 64-byte blocks. Rows are
//! hashed 256 at a time ([`RowEncoder::row_hashes`]); where the CPU has AVX2, eight rows with the same
//! number of blocks go through blake3's compression function together (`lanes.rs`, the workspace's
//! one module with `unsafe`), which gives blake3's bytes exactly and 1.6x the rows per second of a
//! loop of `blake3::hash` (criterion `verify/canonical_blake3`: 3.41 → 5.58 M rows/s).

mod diff;
mod digest;
mod encoding;
mod lanes;

pub use diff::{
    KeyDiff, KeyedRow, MAX_KEYS_LISTED, RowSet, collect_rows, is_zero, narrow_range, range_digest, row_diff,
};
pub use digest::{Buckets, Digest, Routes, batch_digest, bucket_digests, is_bucket_key, routed_digests};
pub use encoding::{HashScratch, RowEncoder, json_value};
