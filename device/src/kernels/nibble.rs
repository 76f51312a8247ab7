//! The compact search's scan: rows of 4-bit codes against one query's 8-bit weights, an integer
//! dot product per row ([`dots`]).
//!
//! A row of `padded` dimensions (a multiple of [`BLOCK`]) takes `padded / 2` bytes, one block of
//! 64 dimensions in 32 bytes: byte `j` of block `b` holds dimension `64 b + j` in its low nibble
//! and dimension `64 b + 32 + j` in its high one ([`pack`]). So one 32-byte load, masked and
//! shifted, gives two registers of codes that line up with the weights in their natural order,
//! and AVX2's unsigned-by-signed byte product (`vpmaddubsw`) multiplies them with no unpacking.

/// Dimensions per block of a packed row.
pub const BLOCK: usize = 64;

/// `dims` rounded up to whole blocks: the length of a row's weights, twice its bytes.
pub fn padded(dims: usize) -> usize {
    dims.div_ceil(BLOCK) * BLOCK
}

/// Packs one row's codes (each at most 15; the dimensions past `codes.len()` are zero) into
/// `out`, `padded(codes.len()) / 2` bytes or more.
pub fn pack(codes: &[u8], out: &mut [u8]) {
    debug_assert!(codes.iter().all(|&c| c < 16), "codes are 4-bit");
    let code = |d: usize| codes.get(d).copied().unwrap_or(0);
    for (block, bytes) in out[..padded(codes.len()) / 2]
        .chunks_exact_mut(BLOCK / 2)
        .enumerate()
    {
        let first = block * BLOCK;
        for (j, byte) in bytes.iter_mut().enumerate() {
            *byte = code(first + j) | (code(first + BLOCK / 2 + j) << 4);
        }
    }
}

/// The code of dimension `d` in a packed row (the inverse of [`pack`]).
pub fn code(row: &[u8], d: usize) -> u8 {
    let (block, lane) = (d / BLOCK, d % BLOCK);
    let byte = row[block * BLOCK / 2 + lane % (BLOCK / 2)];
    if lane < BLOCK / 2 {
        byte & 0x0f
    } else {
        byte >> 4
    }
}

/// `out[r] = sum over d of code(row r, d) * weights[d]` for each packed row of `rows`, where
/// `weights.len()` is the padded row length ([`padded`]) and `rows` holds `out.len()` rows of
/// `weights.len() / 2` bytes. Exact: the largest sum, 15 x 128 x the dimensions, fits an `i32`
/// for any embedding size below a million.
pub fn dots(rows: &[u8], weights: &[i8], out: &mut [i32]) {
    assert_eq!(
        weights.len() % BLOCK,
        0,
        "weights are padded to whole blocks"
    );
    assert_eq!(
        rows.len(),
        out.len() * weights.len() / 2,
        "one packed row per output"
    );
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked above) and the slices have the lengths the kernel
        // reads (asserted above).
        unsafe { avx2::dots(rows, weights, out) };
        return;
    }
    portable(rows, weights, out);
}

/// [`dots`] in plain Rust, for CPUs without AVX2 (and aarch64, where the compiler vectorises it).
fn portable(rows: &[u8], weights: &[i8], out: &mut [i32]) {
    let low = BLOCK / 2;
    for (row, o) in rows.chunks_exact(weights.len() / 2).zip(out) {
        let mut sum = 0i32;
        for (bytes, w) in row.chunks_exact(BLOCK / 2).zip(weights.chunks_exact(BLOCK)) {
            for j in 0..low {
                sum += i32::from(bytes[j] & 0x0f) * i32::from(w[j]);
                sum += i32::from(bytes[j] >> 4) * i32::from(w[low + j]);
            }
        }
        *o = sum;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::BLOCK;
    use std::arch::x86_64::*;

    /// One block per iteration: the codes' two nibbles times the weights' two halves, the byte
    /// products summed in pairs to 16 bits (at most 2 x 15 x 128, no saturation), then to 32.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dots(rows: &[u8], weights: &[i8], out: &mut [i32]) {
        let row_bytes = weights.len() / 2;
        let mask = _mm256_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        let w = weights.as_ptr() as *const __m256i;
        for (r, o) in out.iter_mut().enumerate() {
            let row = rows.as_ptr().add(r * row_bytes) as *const __m256i;
            let mut acc = _mm256_setzero_si256();
            for b in 0..weights.len() / BLOCK {
                let v = _mm256_loadu_si256(row.add(b));
                let low = _mm256_and_si256(v, mask);
                let high = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
                let pairs = _mm256_add_epi16(
                    _mm256_maddubs_epi16(low, _mm256_loadu_si256(w.add(2 * b))),
                    _mm256_maddubs_epi16(high, _mm256_loadu_si256(w.add(2 * b + 1))),
                );
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
            }
            let half = _mm_add_epi32(
                _mm256_castsi256_si128(acc),
                _mm256_extracti128_si256(acc, 1),
            );
            let quad = _mm_add_epi32(half, _mm_shuffle_epi32(half, 0b01_00_11_10));
            let pair = _mm_add_epi32(quad, _mm_shuffle_epi32(quad, 0b10_11_00_01));
            *o = _mm_cvtsi128_si32(pair);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_code_are_inverse_across_blocks_and_padding() {
        let codes: Vec<u8> = (0..100).map(|d| (d * 7 % 16) as u8).collect();
        let mut row = vec![0xffu8; padded(100) / 2];
        pack(&codes, &mut row);
        for d in 0..padded(100) {
            assert_eq!(
                code(&row, d),
                codes.get(d).copied().unwrap_or(0),
                "dimension {d}"
            );
        }
    }

    /// The plain-Rust scan (what aarch64 and older x86 run) against the definition.
    #[test]
    fn portable_scan_matches_the_definition() {
        let dims = 130;
        let rows = 5;
        let codes: Vec<Vec<u8>> = (0..rows)
            .map(|r| (0..dims).map(|d| ((r * 31 + d * 7) % 16) as u8).collect())
            .collect();
        let mut weights: Vec<i8> = (0..padded(dims))
            .map(|d| ((d * 37 % 256) as i32 - 128) as i8)
            .collect();
        weights[dims..].iter_mut().for_each(|w| *w = 0);
        let mut packed = vec![0u8; rows * padded(dims) / 2];
        for (r, c) in codes.iter().enumerate() {
            pack(c, &mut packed[r * padded(dims) / 2..]);
        }
        let mut out = vec![0i32; rows];
        portable(&packed, &weights, &mut out);
        for (r, c) in codes.iter().enumerate() {
            let expect: i32 = (0..dims)
                .map(|d| i32::from(c[d]) * i32::from(weights[d]))
                .sum();
            assert_eq!(out[r], expect, "row {r}");
        }
    }
}
