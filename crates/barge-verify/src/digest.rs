//! Order-independent digests of sets of rows.

use std::ops::AddAssign;

use arrow_array::{Array, RecordBatch};
use barge_core::{KeyRange, Result, Scalar};
use serde::{Deserialize, Serialize};

use crate::encoding::{HashScratch, RowEncoder};

/// Row count and the sum (mod 2^128) of row hashes: equal multisets of rows give equal digests,
/// whatever the order, batching or scheduling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub rows: u64,
    #[serde(with = "hex_u128")]
    pub sum: u128,
}

impl Digest {
    /// Adds one row's hash.
    pub fn add_row(&mut self, row_hash: u128) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(row_hash);
    }
}

impl AddAssign for Digest {
    fn add_assign(&mut self, other: Digest) {
        self.rows += other.rows;
        self.sum = self.sum.wrapping_add(other.sum);
    }
}

/// Takes rows back out of a digest (rows the target rejected are not expected there).
impl std::ops::SubAssign for Digest {
    fn sub_assign(&mut self, other: Digest) {
        self.rows -= other.rows;
        self.sum = self.sum.wrapping_sub(other.sum);
    }
}

/// Digest buckets inside each key range, for a table keyed by one integer column: a mismatch then
/// narrows to one bucket instead of re-reading its whole range. Rows are assigned by comparing
/// integers, which every database orders the same way, so source and target agree on buckets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Buckets {
    /// The key column's position in the schema (the same on both sides: they are aligned).
    pub key_column: usize,
    /// Per range: interior boundaries, ascending; bucket `i` holds `bounds[i-1] <= key < bounds[i]`.
    pub bounds: Vec<Vec<i64>>,
}

impl Buckets {
    /// Buckets in `range`.
    pub fn count(&self, range: usize) -> usize {
        self.bounds[range].len() + 1
    }

    /// The bucket of `range` holding `key`.
    fn bucket(&self, range: usize, key: i128) -> usize {
        self.bounds[range].partition_point(|b| i128::from(*b) <= key)
    }

    /// The key range of bucket `bucket` of `range`.
    pub fn key_range(&self, range: &KeyRange, bucket: usize) -> KeyRange {
        let bounds = &self.bounds[range.id];
        let at = |i: usize| Some(vec![Scalar::Int(bounds[i])]);
        KeyRange {
            id: range.id,
            lo: if bucket == 0 { range.lo.clone() } else { at(bucket - 1) },
            hi: if bucket == bounds.len() { range.hi.clone() } else { at(bucket) },
        }
    }
}

/// Where a row belongs when a table is read in storage order instead of one key range at a time
/// (a target read while its key is still being built): the range whose integer bounds hold its
/// key, then the bucket inside that range.
#[derive(Clone, Debug, PartialEq)]
pub struct Routes<'a> {
    buckets: &'a Buckets,
    /// Lower bounds of ranges 1.. (range 0 has none), ascending.
    starts: Vec<i128>,
}

impl<'a> Routes<'a> {
    /// Routes over `ranges` (ids `0..n` in key order), or `None` unless they tile the whole key
    /// space with integer bounds: unbounded at both ends, each starting where the one before ends.
    pub fn new(buckets: &'a Buckets, ranges: &[KeyRange]) -> Option<Self> {
        let (first, last) = (ranges.first()?, ranges.last()?);
        if first.lo.is_some() || last.hi.is_some() || buckets.bounds.len() != ranges.len() {
            return None;
        }
        let mut starts = Vec::with_capacity(ranges.len() - 1);
        for (i, pair) in ranges.windows(2).enumerate() {
            let (Some([Scalar::Int(hi)]), Some([Scalar::Int(lo)])) = (pair[0].hi.as_deref(), pair[1].lo.as_deref())
            else {
                return None;
            };
            if hi != lo || pair[0].id != i || starts.last().is_some_and(|s| *s >= i128::from(*lo)) {
                return None;
            }
            starts.push(i128::from(*lo));
        }
        (last.id == ranges.len() - 1).then_some(Routes { buckets, starts })
    }

    /// The (range, bucket) holding `key`.
    fn route(&self, key: i128) -> (usize, usize) {
        let range = self.starts.partition_point(|s| *s <= key);
        (range, self.buckets.bucket(range, key))
    }

    /// Empty digests for every bucket of every range.
    pub fn empty(&self) -> Vec<Vec<Digest>> {
        (0..self.buckets.bounds.len()).map(|range| vec![Digest::default(); self.buckets.count(range)]).collect()
    }
}

/// Adds each row of `batch`, read in any order, to the digest of its bucket in `into` (laid out as
/// [`Routes::empty`]).
pub fn routed_digests(table: &str, batch: &RecordBatch, routes: &Routes<'_>, into: &mut [Vec<Digest>]) -> Result<()> {
    let column = batch.column(routes.buckets.key_column);
    let refused = |reason| barge_core::Error::engine(format!("verifying `{table}`"), reason);
    let keys = integer_keys(column.as_ref()).ok_or_else(|| refused("the key column read back is not an integer"))?;
    if column.null_count() > 0 {
        return Err(refused("a key read back is NULL"));
    }
    hash_rows(table, batch, |row, hash| {
        let (range, bucket) = routes.route(keys(row));
        into[range][bucket].add_row(hash);
    })
}

/// Hashes every row of `batch`, handing `add` each row's index and hash.
fn hash_rows(table: &str, batch: &RecordBatch, mut add: impl FnMut(usize, u128)) -> Result<()> {
    let encoder = RowEncoder::new(table, batch)?;
    let mut scratch = HashScratch::default();
    for rows in chunks(batch.num_rows()) {
        let hashes = encoder.row_hashes(rows.clone(), &mut scratch);
        for (row, hash) in rows.zip(hashes) {
            add(row, *hash);
        }
    }
    Ok(())
}

/// Whether a key column of this type can be bucketed (see [`Buckets`]).
pub fn is_bucket_key(data_type: &arrow_schema::DataType) -> bool {
    integer_keys(arrow_array::new_empty_array(data_type).as_ref()).is_some()
}

/// Integer key values of a column, or `None` for a column that is not an integer.
fn integer_keys(array: &dyn Array) -> Option<barge_core::arrays::Get<'_, i128>> {
    use arrow_array::cast::AsArray;
    match array.data_type() {
        // A whole-number decimal key (MySQL's bigint unsigned lands as numeric(20,0)).
        arrow_schema::DataType::Decimal128(_, 0) => {
            let p = array.as_primitive::<arrow_array::types::Decimal128Type>();
            Some(Box::new(move |i| p.value(i)))
        }
        _ => barge_core::arrays::integers(array),
    }
}

/// The digest of each bucket of `range` over the rows of `batch` (one digest without buckets).
pub fn bucket_digests(
    table: &str,
    batch: &RecordBatch,
    buckets: Option<&Buckets>,
    range: usize,
) -> Result<Vec<Digest>> {
    let Some((buckets, keys)) = buckets.and_then(|b| integer_keys(batch.column(b.key_column).as_ref()).map(|k| (b, k)))
    else {
        return Ok(vec![batch_digest(table, batch)?]);
    };
    let mut digests = vec![Digest::default(); buckets.count(range)];
    hash_rows(table, batch, |row, hash| digests[buckets.bucket(range, keys(row))].add_row(hash))?;
    Ok(digests)
}

/// Rows hashed together: enough to fill the SIMD lanes for every row length, few enough that
/// their canonical bytes stay in the CPU's cache.
const HASH_CHUNK_ROWS: usize = 256;

fn chunks(rows: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..rows).step_by(HASH_CHUNK_ROWS).map(move |start| start..(start + HASH_CHUNK_ROWS).min(rows))
}

/// The digest of every row of `batch`.
pub fn batch_digest(table: &str, batch: &RecordBatch) -> Result<Digest> {
    let mut digest = Digest::default();
    hash_rows(table, batch, |_, hash| digest.add_row(hash))?;
    Ok(digest)
}

mod hex_u128 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:032x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        u128::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, BinaryArray, Float64Array, Int64Array, StringArray};
    use proptest::prelude::*;
    use std::sync::Arc;

    type Row = (i64, Option<String>, Option<f64>, Option<Vec<u8>>);

    fn batch(rows: &[Row]) -> RecordBatch {
        let ids: ArrayRef = Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>()));
        let texts: ArrayRef = Arc::new(StringArray::from(rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>()));
        let floats: ArrayRef = Arc::new(Float64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>()));
        let blobs: ArrayRef = Arc::new(BinaryArray::from(rows.iter().map(|r| r.3.as_deref()).collect::<Vec<_>>()));
        RecordBatch::try_from_iter([("id", ids), ("t", texts), ("f", floats), ("b", blobs)]).unwrap()
    }

    fn digest_in_batches(rows: &[Row], cuts: &[usize]) -> Digest {
        let mut total = Digest::default();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&rows.len())) {
            let end = cut.clamp(start, rows.len());
            total += batch_digest("t", &batch(&rows[start..end])).unwrap();
            start = end;
        }
        total
    }

    fn rows_strategy() -> impl Strategy<Value = Vec<Row>> {
        prop::collection::vec(
            (
                any::<i64>(),
                prop::option::of(".{0,12}"),
                prop::option::of(any::<f64>()),
                prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
            ),
            1..60,
        )
    }

    #[test]
    fn buckets_split_a_range_by_integer_key_and_add_up_to_its_digest() {
        let rows: Vec<Row> = (0..100).map(|i| (i, Some(format!("v{i}")), None, None)).collect();
        let buckets = Buckets { key_column: 0, bounds: vec![vec![10, 50]] };
        let per_bucket = bucket_digests("t", &batch(&rows), Some(&buckets), 0).unwrap();
        assert_eq!(per_bucket.iter().map(|d| d.rows).collect::<Vec<_>>(), [10, 40, 50]);
        let mut total = Digest::default();
        for d in &per_bucket {
            total += *d;
        }
        assert_eq!(total, batch_digest("t", &batch(&rows)).unwrap());
        let range = KeyRange { id: 0, lo: None, hi: Some(vec![Scalar::Int(100)]) };
        let middle = buckets.key_range(&range, 1);
        assert_eq!((middle.lo, middle.hi), (Some(vec![Scalar::Int(10)]), Some(vec![Scalar::Int(50)])));
        assert_eq!(buckets.key_range(&range, 2).hi, range.hi);
        assert_eq!(buckets.key_range(&range, 0).lo, None);
    }

    fn tiling(bounds: &[i64]) -> Vec<KeyRange> {
        let edge = |i: usize| (i > 0 && i <= bounds.len()).then(|| vec![Scalar::Int(bounds[i - 1])]);
        (0..=bounds.len()).map(|id| KeyRange { id, lo: edge(id), hi: edge(id + 1) }).collect()
    }

    #[test]
    fn routes_need_ranges_that_tile_the_key_space() {
        let buckets = Buckets { key_column: 0, bounds: vec![vec![], vec![], vec![]] };
        assert!(Routes::new(&buckets, &tiling(&[10, 20])).is_some());
        let mut gap = tiling(&[10, 20]);
        gap[1].hi = Some(vec![Scalar::Int(15)]);
        assert!(Routes::new(&buckets, &gap).is_none(), "rows between 15 and 20 belong to no range");
        let mut bounded = tiling(&[10, 20]);
        bounded[0].lo = Some(vec![Scalar::Int(0)]);
        assert!(Routes::new(&buckets, &bounded).is_none(), "rows below 0 belong to no range");
        let mut text = tiling(&[10, 20]);
        (text[0].hi, text[1].lo) = (Some(vec![Scalar::Text("m".into())]), Some(vec![Scalar::Text("m".into())]));
        assert!(Routes::new(&buckets, &text).is_none());
        assert!(Routes::new(&buckets, &tiling(&[10])).is_none(), "one set of bucket bounds per range");
    }

    proptest! {
        /// Rows read in any order and routed by key give the digests that reading each range's
        /// rows alone gives.
        #[test]
        fn routed_rows_add_up_to_each_range_read_alone(
            mut keys in prop::collection::vec(-1000i64..1000, 1..300),
            cuts in prop::collection::btree_set(-900i64..900, 0..5),
            split in 1usize..300,
        ) {
            keys.sort_unstable();
            keys.dedup();
            let cuts: Vec<i64> = cuts.into_iter().collect();
            let ranges = tiling(&cuts);
            // Two buckets per range, split at its middle when it has bounds on both sides.
            let bounds = ranges.iter().map(|r| match (r.lo.as_deref(), r.hi.as_deref()) {
                (Some([Scalar::Int(lo)]), Some([Scalar::Int(hi)])) if hi - lo > 1 => vec![lo + (hi - lo) / 2],
                _ => Vec::new(),
            }).collect();
            let buckets = Buckets { key_column: 0, bounds };
            let routes = Routes::new(&buckets, &ranges).unwrap();
            let rows: Vec<Row> = keys.iter().map(|k| (*k, Some(format!("r{k}")), None, None)).collect();
            let mut routed = routes.empty();
            // Storage order: interleaved, in two batches.
            let mut stored = rows.clone();
            stored.reverse();
            let split = split.min(stored.len());
            for part in [&stored[..split], &stored[split..]] {
                routed_digests("t", &batch(part), &routes, &mut routed).unwrap();
            }
            for range in &ranges {
                let inside: Vec<Row> = rows.iter().filter(|r| {
                    range.lo.as_deref().is_none_or(|lo| matches!(lo, [Scalar::Int(v)] if r.0 >= *v))
                        && range.hi.as_deref().is_none_or(|hi| matches!(hi, [Scalar::Int(v)] if r.0 < *v))
                }).cloned().collect();
                let alone = bucket_digests("t", &batch(&inside), Some(&buckets), range.id).unwrap();
                prop_assert_eq!(&routed[range.id], &alone);
            }
        }
    }

    proptest! {
        #[test]
        fn digest_ignores_row_order_and_batch_boundaries(
            rows in rows_strategy(), mut cuts in prop::collection::vec(0usize..60, 0..5), seed in any::<u64>()
        ) {
            cuts.sort_unstable();
            let whole = batch_digest("t", &batch(&rows)).unwrap();
            prop_assert_eq!(digest_in_batches(&rows, &cuts), whole);
            let mut shuffled = rows.clone();
            let n = shuffled.len();
            for i in 0..n {
                shuffled.swap(i, (seed.wrapping_mul(i as u64 + 7) % n as u64) as usize);
            }
            prop_assert_eq!(batch_digest("t", &batch(&shuffled)).unwrap(), whole);
        }

        #[test]
        fn any_single_changed_value_changes_the_digest(rows in rows_strategy(), which in any::<usize>(), col in 0usize..4) {
            let whole = batch_digest("t", &batch(&rows)).unwrap();
            let mut changed = rows.clone();
            let i = which % changed.len();
            match col {
                0 => changed[i].0 = changed[i].0.wrapping_add(1),
                1 => changed[i].1 = match &changed[i].1 { None => Some(String::new()), Some(s) => Some(format!("{s}x")) },
                2 => changed[i].2 = match changed[i].2 { None => Some(0.0), Some(x) if x.is_nan() => None, Some(x) => Some(if x == 0.0 { 1.0 } else { x * 2.0 + 1.0 }) },
                _ => changed[i].3 = match &changed[i].3 { None => Some(Vec::new()), Some(b) => Some([b.as_slice(), &[0]].concat()) },
            }
            if col == 2 && changed[i].2.is_some_and(f64::is_infinite) && rows[i].2.is_some_and(f64::is_infinite) {
                return Ok(()); // inf * 2 + 1 is still inf: not a change
            }
            prop_assert_ne!(batch_digest("t", &batch(&changed)).unwrap(), whole);
        }

        #[test]
        fn duplicated_rows_do_not_cancel_out(rows in rows_strategy()) {
            let once = batch_digest("t", &batch(&rows)).unwrap();
            let twice = batch_digest("t", &batch(&[rows.clone(), rows.clone()].concat())).unwrap();
            // With XOR the duplicate would vanish (sum 0); with a sum it doubles.
            prop_assert_eq!(twice.sum, once.sum.wrapping_mul(2));
            prop_assert_ne!(twice.sum, 0);
            prop_assert_eq!(twice.rows, once.rows * 2);
        }
    }
}
