//! Row hashes of many rows at once.
//!
//! A row hash is the first 16 bytes of `blake3(row bytes)` (see the crate docs). Rows are short
//! (a few 64-byte blocks), and blake3 hashes a short input one block at a time, so a digest spends
//! most of its time in blake3's compression function, working on one row. Here, where the CPU has
//! AVX2, eight rows of the same block count go through the compression function together, one per
//! 32-bit lane, as blake3's own `hash_many` does for the chunks of one long input. The output is
//! blake3's, bit for bit: the tests compare every input length from 0 to 2049 bytes with the
//! `blake3` crate, which also hashes whatever this module does not (rows over 1024 bytes, which
//! span more than one chunk, and CPUs without AVX2).
//!
//! Why not the `blake3` crate alone: its public API hashes one input at a time. Its many-input
//! function is internal ("for benchmarks only") and takes whole blocks only, and an API for
//! equal-length inputs is still a proposal (BLAKE3-team/BLAKE3#575). When the crate offers
//! variable-length many-input hashing, this module should go.
//!
//! This is the one module of barge with `unsafe` code: the call into the AVX2 function once the
//! CPU has been checked, and vector loads and stores from arrays of the right size.
#![allow(unsafe_code)]

/// blake3's longest single-chunk input: longer rows are hashed by the `blake3` crate.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const CHUNK_LEN: usize = 1024;

/// The row hash of one input, by the `blake3` crate: the reference the lanes must match.
pub(crate) fn row_hash(bytes: &[u8]) -> u128 {
    truncated(&blake3::hash(bytes))
}

/// A row hash: the first 16 bytes of a blake3 hash.
pub(crate) fn truncated(hash: &blake3::Hash) -> u128 {
    u128::from_le_bytes(hash.as_bytes()[..16].try_into().expect("16 bytes"))
}

/// Sets `out` to the row hash of each input, in order.
pub(crate) fn row_hashes(inputs: &[&[u8]], out: &mut Vec<u128>) {
    out.clear();
    out.resize(inputs.len(), 0);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has just been checked for AVX2, the only feature the function enables.
        unsafe { x86::row_hashes(inputs, out) };
        return;
    }
    for (input, hash) in inputs.iter().zip(out.iter_mut()) {
        *hash = row_hash(input);
    }
}

/// The blake3 constants of a single-chunk, unkeyed hash.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod blake3_spec {
    pub const IV: [u32; 8] =
        [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19];
    /// The message words each of the seven rounds takes, in order (the permutation applied
    /// round after round).
    pub const SCHEDULE: [[usize; 16]; 7] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8],
        [3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1],
        [10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6],
        [12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4],
        [9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7],
        [11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13],
    ];
    pub const CHUNK_START: u32 = 1;
    pub const CHUNK_END: u32 = 2;
    pub const ROOT: u32 = 8;
    pub const BLOCK_LEN: usize = 64;
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::blake3_spec::{BLOCK_LEN, CHUNK_END, CHUNK_START, IV, ROOT, SCHEDULE};
    use std::arch::x86_64::*;

    const LANES: usize = 8;

    /// Byte orders that rotate every 32-bit lane right by 16 and by 8 bits (lane bytes are little
    /// endian: byte `i` of the result is byte `order[i]` of the input).
    const ROT16: [i8; 16] = [2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13];
    const ROT8: [i8; 16] = [1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12];

    #[target_feature(enable = "avx2")]
    fn rotate_bytes(x: __m256i, order: [i8; 16]) -> __m256i {
        let [b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15] = order;
        let order = _mm_setr_epi8(b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15);
        _mm256_shuffle_epi8(x, _mm256_broadcastsi128_si256(order))
    }

    #[target_feature(enable = "avx2")]
    fn rot12(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_srli_epi32(x, 12), _mm256_slli_epi32(x, 20))
    }

    #[target_feature(enable = "avx2")]
    fn rot7(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_srli_epi32(x, 7), _mm256_slli_epi32(x, 25))
    }

    /// blake3's quarter-round G on one column or diagonal of the state, in every lane.
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    fn g(v: &mut [__m256i; 16], a: usize, b: usize, c: usize, d: usize, x: __m256i, y: __m256i) {
        v[a] = _mm256_add_epi32(_mm256_add_epi32(v[a], v[b]), x);
        v[d] = rotate_bytes(_mm256_xor_si256(v[d], v[a]), ROT16);
        v[c] = _mm256_add_epi32(v[c], v[d]);
        v[b] = rot12(_mm256_xor_si256(v[b], v[c]));
        v[a] = _mm256_add_epi32(_mm256_add_epi32(v[a], v[b]), y);
        v[d] = rotate_bytes(_mm256_xor_si256(v[d], v[a]), ROT8);
        v[c] = _mm256_add_epi32(v[c], v[d]);
        v[b] = rot7(_mm256_xor_si256(v[b], v[c]));
    }

    /// One compression of one block per lane (block counter 0: every input is one chunk):
    /// `cv` becomes the first half of the output, which is the next chaining value, or for the
    /// last block (flag ROOT) the hash.
    #[target_feature(enable = "avx2")]
    fn compress(cv: &mut [__m256i; 8], m: &[__m256i; 16], block_len: __m256i, flags: u32) {
        let iv = |i: usize| _mm256_set1_epi32(IV[i] as i32);
        let zero = _mm256_setzero_si256();
        let mut v = [
            cv[0],
            cv[1],
            cv[2],
            cv[3],
            cv[4],
            cv[5],
            cv[6],
            cv[7],
            iv(0),
            iv(1),
            iv(2),
            iv(3),
            zero,
            zero,
            block_len,
            _mm256_set1_epi32(flags as i32),
        ];
        for s in &SCHEDULE {
            g(&mut v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
            g(&mut v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
            g(&mut v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
            g(&mut v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
            g(&mut v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
            g(&mut v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
            g(&mut v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
            g(&mut v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
        }
        for (k, word) in cv.iter_mut().enumerate() {
            *word = _mm256_xor_si256(v[k], v[k + 8]);
        }
    }

    #[target_feature(enable = "avx2")]
    fn load(words: &[u32; LANES]) -> __m256i {
        // SAFETY: reads exactly the 32 bytes of `words` (an unaligned load).
        unsafe { _mm256_loadu_si256(words.as_ptr().cast()) }
    }

    #[target_feature(enable = "avx2")]
    fn store(v: __m256i) -> [u32; LANES] {
        let mut words = [0u32; LANES];
        // SAFETY: writes exactly the 32 bytes of `words` (an unaligned store).
        unsafe { _mm256_storeu_si256(words.as_mut_ptr().cast(), v) };
        words
    }

    /// Hashes eight inputs of `blocks` blocks each (`group` holds their indices; a shorter group
    /// repeats its last input in the spare lanes).
    #[target_feature(enable = "avx2")]
    fn hash_group(inputs: &[&[u8]], group: &[u32], blocks: usize, out: &mut [u128]) {
        let lane_input = |lane: usize| inputs[group[lane.min(group.len() - 1)] as usize];
        let mut cv: [__m256i; 8] = std::array::from_fn(|i| _mm256_set1_epi32(IV[i] as i32));
        let mut words = [[0u32; LANES]; 16];
        for block in 0..blocks {
            let mut block_len = [BLOCK_LEN as u32; LANES];
            for (lane, len) in block_len.iter_mut().enumerate() {
                let rest = &lane_input(lane)[block * BLOCK_LEN..];
                let mut padded = [0u8; BLOCK_LEN];
                let bytes = if rest.len() >= BLOCK_LEN {
                    &rest[..BLOCK_LEN]
                } else {
                    padded[..rest.len()].copy_from_slice(rest);
                    *len = rest.len() as u32;
                    &padded[..]
                };
                for (word, four) in words.iter_mut().zip(bytes.chunks_exact(4)) {
                    word[lane] = u32::from_le_bytes(four.try_into().expect("4 bytes"));
                }
            }
            let m: [__m256i; 16] = std::array::from_fn(|w| load(&words[w]));
            let mut flags = if block == 0 { CHUNK_START } else { 0 };
            if block + 1 == blocks {
                flags |= CHUNK_END | ROOT;
            }
            compress(&mut cv, &m, load(&block_len), flags);
        }
        let hash: [[u32; LANES]; 4] = std::array::from_fn(|w| store(cv[w]));
        for (lane, &i) in group.iter().enumerate() {
            let word = |w: usize| u128::from(hash[w][lane]) << (32 * w);
            out[i as usize] = word(0) | word(1) | word(2) | word(3);
        }
    }

    /// Row hashes of `inputs` into `out` (as long): inputs of one block count are hashed eight
    /// at a time, inputs longer than one chunk by the `blake3` crate.
    #[target_feature(enable = "avx2")]
    pub(super) fn row_hashes(inputs: &[&[u8]], out: &mut [u128]) {
        const MAX_BLOCKS: usize = super::CHUNK_LEN / BLOCK_LEN;
        let mut by_blocks: [Vec<u32>; MAX_BLOCKS] = Default::default();
        for (i, input) in inputs.iter().enumerate() {
            let blocks = input.len().div_ceil(BLOCK_LEN).max(1);
            match by_blocks.get_mut(blocks - 1) {
                Some(group) => group.push(i as u32),
                None => out[i] = super::row_hash(input),
            }
        }
        for (blocks, indices) in by_blocks.iter().enumerate() {
            for group in indices.chunks(LANES) {
                hash_group(inputs, group, blocks + 1, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32).map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8).collect()
    }

    #[test]
    fn every_length_up_to_two_chunks_matches_blake3() {
        let inputs: Vec<Vec<u8>> = (0..=2 * CHUNK_LEN + 1).map(|len| bytes(len, len as u32)).collect();
        let slices: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        let mut hashes = Vec::new();
        row_hashes(&slices, &mut hashes);
        for (input, hash) in slices.iter().zip(&hashes) {
            assert_eq!(*hash, row_hash(input), "length {}", input.len());
        }
    }

    #[test]
    fn groups_of_every_size_match_blake3() {
        for count in 0..=17 {
            let inputs: Vec<Vec<u8>> = (0..count).map(|i| bytes(130, i)).collect();
            let slices: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
            let mut hashes = vec![7; 3];
            row_hashes(&slices, &mut hashes);
            assert_eq!(hashes, slices.iter().map(|s| row_hash(s)).collect::<Vec<_>>(), "{count} inputs");
        }
    }

    proptest! {
        #[test]
        fn mixed_lengths_in_any_order_match_blake3(
            inputs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..1300), 0..40)
        ) {
            let slices: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
            let mut hashes = Vec::new();
            row_hashes(&slices, &mut hashes);
            prop_assert_eq!(hashes, slices.iter().map(|s| row_hash(s)).collect::<Vec<_>>());
        }
    }
}
