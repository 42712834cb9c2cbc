//! Digest buckets inside each key range, for tables keyed by one integer column: a mismatch then
//! points at a bucket rather than a whole range.

use barge_core::{KeyRange, KeySpec, Result, Scalar, Source, TableInfo};
use barge_plan::partition::integer_bounds;
use barge_verify::{Buckets, is_bucket_key};

/// Digest buckets per range of the copy ranges.
const BUCKETS_PER_RANGE: usize = 16;

/// Buckets for `table` over `ranges` when its key is one integer column (see [`Buckets`]):
/// each range split arithmetically between its bounds (the table's min and max at the ends).
/// `read` is the table as stored (for statistics), `hashed` the table as hashed (the transform's
/// output), whose key column the buckets index.
pub(crate) fn bucket_layout(
    source: &dyn Source,
    read: &TableInfo,
    hashed: &TableInfo,
    ranges: &[KeyRange],
) -> Result<Option<Buckets>> {
    let KeySpec::Primary(columns) = &hashed.key else { return Ok(None) };
    let [column] = columns.as_slice() else { return Ok(None) };
    if !is_bucket_key(hashed.schema.field(*column).data_type()) {
        return Ok(None);
    }
    let table = read;
    // The outer ends only anchor the arithmetic: a bound beyond the real min or max just leaves a
    // bucket empty. With three or more ranges they are extrapolated from the interior boundaries,
    // sparing a COUNT/MIN/MAX scan (a full index scan on InnoDB); fewer ranges ask the database.
    let interior: Option<Vec<i64>> = ranges
        .iter()
        .take(ranges.len().saturating_sub(1))
        .map(|r| match r.hi.as_deref() {
            Some([Scalar::Int(v)]) => Some(*v),
            _ => None,
        })
        .collect();
    let Some(interior) = interior else { return Ok(None) };
    let (min, max) = match interior.as_slice() {
        [first, .., last] => {
            let width = (last - first) / (interior.len() as i64 - 1);
            (first.saturating_sub(width), last.saturating_add(width))
        }
        _ => {
            let stats = source.key_stats(table, &KeyRange::all())?;
            match (stats.min.as_deref(), stats.max.as_deref()) {
                (Some([Scalar::Int(min)]), Some([Scalar::Int(max)])) => (*min, *max),
                _ => return Ok(None),
            }
        }
    };
    let bounds = ranges
        .iter()
        .map(|range| {
            let lo = match range.lo.as_deref() {
                None => min,
                Some([Scalar::Int(v)]) => *v,
                Some(_) => return None,
            };
            let hi = match range.hi.as_deref() {
                None => max,
                Some([Scalar::Int(v)]) => v.checked_sub(1)?,
                Some(_) => return None,
            };
            Some(if hi > lo { integer_bounds(lo, hi, BUCKETS_PER_RANGE) } else { Vec::new() })
        })
        .collect::<Option<Vec<_>>>();
    Ok(bounds.map(|bounds| Buckets { key_column: *column, bounds }))
}
