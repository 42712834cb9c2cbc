//! Splitting a table's key space into ranges of similar row counts.
//!
//! * A single integer key that is perfectly dense (`rows == max - min + 1`) is split by arithmetic.
//! * Everything else (sparse or skewed integers, text, uuid, composite keys, physical locators) is
//!   split at quantiles of a key sample that the database returns in its own order. barge never sorts
//!   keys itself: its byte order may differ from the database's collation, and boundaries out of
//!   order would make ranges overlap.
//! * A table with no key at all is one range.
//!
//! Ranges are half-open, `[lo, hi)`, and share their boundaries, so together they cover the key
//! space exactly once.

use barge_core::{Key, KeyRange, KeySpec, Result, Scalar, Source, TableInfo};

/// Sample keys drawn per planned range; 256 per range keeps quantile error around ±6%, far inside
/// the 2x balance the runtime needs.
pub const SAMPLE_KEYS_PER_RANGE: usize = 256;

/// Splits `within` into at most `parts` ranges of `table`, numbered from 0.
pub fn plan_ranges(source: &dyn Source, table: &TableInfo, within: &KeyRange, parts: usize) -> Result<Vec<KeyRange>> {
    if parts <= 1 || matches!(table.key, KeySpec::None) {
        return Ok(vec![KeyRange { id: 0, ..within.clone() }]);
    }
    let stats = source.key_stats(table, within)?;
    if stats.rows < 2 {
        return Ok(vec![KeyRange { id: 0, ..within.clone() }]);
    }
    let parts = parts.min(usize::try_from(stats.rows).unwrap_or(usize::MAX));
    let bounds = match (stats.min.as_deref(), stats.max.as_deref()) {
        (Some([Scalar::Int(min)]), Some([Scalar::Int(max)])) if is_dense(*min, *max, stats.rows) => {
            integer_bounds(*min, *max, parts).into_iter().map(|b| vec![Scalar::Int(b)]).collect()
        }
        _ => quantile_bounds(&source.sample_keys(table, within, parts * SAMPLE_KEYS_PER_RANGE)?, parts),
    };
    Ok(ranges_from_bounds(within, bounds))
}

fn is_dense(min: i64, max: i64, rows: u64) -> bool {
    let span = i128::from(max) - i128::from(min) + 1;
    span == i128::from(rows)
}

/// Interior boundaries that split `[min, max]` into `parts` equal integer slices, strictly
/// increasing and within `(min, max]`.
pub fn integer_bounds(min: i64, max: i64, parts: usize) -> Vec<i64> {
    let span = i128::from(max) - i128::from(min) + 1;
    let parts = i128::try_from(parts).unwrap_or(i128::MAX).clamp(1, span.max(1));
    let mut bounds: Vec<i64> =
        (1..parts).map(|i| i64::try_from(i128::from(min) + span * i / parts).expect("within [min, max]")).collect();
    bounds.dedup();
    bounds
}

/// Interior boundaries at the quantiles of `sample`, which must be in the database's ascending key
/// order. Repeated keys collapse, so boundaries are strictly increasing in that order.
pub fn quantile_bounds(sample: &[Key], parts: usize) -> Vec<Key> {
    if sample.is_empty() || parts <= 1 {
        return Vec::new();
    }
    let mut bounds: Vec<Key> = Vec::with_capacity(parts - 1);
    for i in 1..parts {
        let candidate = &sample[i * sample.len() / parts];
        // The first sample key is not a boundary: a range [lo, sample[0]) would usually be empty.
        if candidate == &sample[0] || bounds.last() == Some(candidate) {
            continue;
        }
        bounds.push(candidate.clone());
    }
    bounds
}

/// Consecutive ranges `[within.lo, b0), [b0, b1), …, [bn, within.hi)`.
pub fn ranges_from_bounds(within: &KeyRange, bounds: Vec<Key>) -> Vec<KeyRange> {
    let mut ranges = Vec::with_capacity(bounds.len() + 1);
    let mut lo = within.lo.clone();
    for bound in bounds {
        ranges.push(KeyRange { id: ranges.len(), lo, hi: Some(bound.clone()) });
        lo = Some(bound);
    }
    ranges.push(KeyRange { id: ranges.len(), lo, hi: within.hi.clone() });
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn int_ranges(bounds: Vec<i64>) -> Vec<KeyRange> {
        ranges_from_bounds(&KeyRange::all(), bounds.into_iter().map(|b| vec![Scalar::Int(b)]).collect())
    }

    /// Which ranges contain `key` (integers compare as the database would).
    fn containing(ranges: &[KeyRange], key: i64) -> Vec<usize> {
        let as_int = |k: &Option<Key>| k.as_ref().map(|k| if let Scalar::Int(v) = k[0] { v } else { unreachable!() });
        ranges
            .iter()
            .filter(|r| as_int(&r.lo).is_none_or(|lo| key >= lo) && as_int(&r.hi).is_none_or(|hi| key < hi))
            .map(|r| r.id)
            .collect()
    }

    /// Draws a sample the way a database would: uniformly, returned in key order.
    fn sample_of(sorted_keys: &[i64], want: usize) -> Vec<Key> {
        let step = (sorted_keys.len() / want.max(1)).max(1);
        sorted_keys.iter().step_by(step).map(|&k| vec![Scalar::Int(k)]).collect()
    }

    fn counts_per_range(ranges: &[KeyRange], keys: &[i64]) -> Vec<usize> {
        let mut counts = vec![0; ranges.len()];
        for &k in keys {
            counts[containing(ranges, k)[0]] += 1;
        }
        counts
    }

    #[test]
    fn dense_integers_split_evenly() {
        assert_eq!(integer_bounds(1, 100, 4), vec![26, 51, 76]);
        assert_eq!(integer_bounds(0, 2, 8), vec![1, 2]);
        assert_eq!(integer_bounds(i64::MIN, i64::MAX, 2), vec![0]);
    }

    #[test]
    fn repeated_sample_keys_do_not_make_empty_or_overlapping_ranges() {
        let sample: Vec<Key> = [1, 1, 1, 1, 1, 1, 2, 3].iter().map(|&k| vec![Scalar::Int(k)]).collect();
        let bounds = quantile_bounds(&sample, 4);
        assert_eq!(bounds, vec![vec![Scalar::Int(2)]]);
    }

    proptest! {
        #[test]
        fn integer_ranges_cover_every_key_exactly_once(
            min in -1_000_000i64..1_000_000, len in 1i64..100_000, parts in 1usize..64, probe in any::<i64>()
        ) {
            let max = min + len - 1;
            let ranges = int_ranges(integer_bounds(min, max, parts));
            prop_assert!(ranges.len() <= parts);
            for key in [min, max, probe, (min + max) / 2] {
                prop_assert_eq!(containing(&ranges, key).len(), 1);
            }
        }

        #[test]
        fn quantile_ranges_cover_every_key_exactly_once(
            mut keys in prop::collection::vec(-1000i64..1000, 1..2000), parts in 2usize..32, probe in -2000i64..2000
        ) {
            keys.sort_unstable();
            let ranges = int_ranges(
                quantile_bounds(&sample_of(&keys, parts * 16), parts)
                    .into_iter()
                    .map(|k| if let Scalar::Int(v) = k[0] { v } else { unreachable!() })
                    .collect(),
            );
            prop_assert_eq!(containing(&ranges, probe).len(), 1);
            for k in keys.iter().step_by(17) {
                prop_assert_eq!(containing(&ranges, *k).len(), 1);
            }
        }

        #[test]
        fn skewed_keys_balance_within_2x(seed in any::<u64>(), parts in 2usize..16, skew in 2u32..6) {
            // Keys crowd towards zero: key = floor(x^skew * 10^9) for x uniform in [0,1).
            let mut state = seed | 1;
            let mut keys: Vec<i64> = (0..40_000)
                .map(|i| {
                    state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                    let x = (state >> 11) as f64 / (1u64 << 53) as f64;
                    (x.powi(skew as i32) * 1e9) as i64 * 40_000 + i
                })
                .collect();
            keys.sort_unstable();
            let bounds: Vec<i64> = quantile_bounds(&sample_of(&keys, parts * SAMPLE_KEYS_PER_RANGE), parts)
                .into_iter()
                .map(|k| if let Scalar::Int(v) = k[0] { v } else { unreachable!() })
                .collect();
            let counts = counts_per_range(&int_ranges(bounds), &keys);
            let (lo, hi) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
            prop_assert_eq!(counts.len(), parts);
            prop_assert!(hi <= 2 * lo, "unbalanced: {:?}", counts);
        }
    }
}
