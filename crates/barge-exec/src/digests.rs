//! Range digests as the runtime keeps them: per range, one digest per bucket (a single one
//! without buckets), filled concurrently by the CPU stage.

use std::sync::Mutex;

use barge_core::KeyRange;
use barge_verify::{Buckets, Digest};

/// One digest per bucket (a single one without buckets) for each range.
pub(crate) type RangeDigests = Vec<Vec<Digest>>;

/// Digests being filled, one slot per range.
pub(crate) type DigestSlots = Vec<Mutex<Vec<Digest>>>;

pub(crate) fn empty_digests(ranges: &[KeyRange], buckets: Option<&Buckets>) -> DigestSlots {
    ranges.iter().map(|r| Mutex::new(vec![Digest::default(); buckets.map_or(1, |b| b.count(r.id))])).collect()
}

pub(crate) fn into_digests(digests: DigestSlots) -> RangeDigests {
    digests.into_iter().map(|d| d.into_inner().expect("digest lock")).collect()
}

pub(crate) fn add_digests(slot: &Mutex<Vec<Digest>>, digests: Vec<Digest>) {
    let mut slot = slot.lock().expect("digest lock");
    for (total, digest) in slot.iter_mut().zip(digests) {
        *total += digest;
    }
}

pub(crate) fn subtract_digests(slot: &Mutex<Vec<Digest>>, digests: Vec<Digest>) {
    let mut slot = slot.lock().expect("digest lock");
    for (total, digest) in slot.iter_mut().zip(digests) {
        *total -= digest;
    }
}

pub(crate) fn sum<'a>(digests: impl IntoIterator<Item = &'a Digest>) -> Digest {
    digests.into_iter().fold(Digest::default(), |mut acc, d| {
        acc += *d;
        acc
    })
}
