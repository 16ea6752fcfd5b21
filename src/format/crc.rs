//! CRC32C (Castagnoli), the checksum of every batch, stamp and metadata file, and of a
//! concatenation from the CRCs of its parts.
//!
//! [`crc32c`] and [`crc32c_append`] compute it with the `crc-fast` crate: on x86-64 with
//! AVX-512 VPCLMULQDQ it folds 64 bytes an instruction where the `crc32c` crate issues one CRC32
//! instruction per 8 bytes: about 4 times as fast at 16 KiB and 1 MiB on the reference machine
//! (49-69 GiB/s against 12-16), 1.3-1.4 times for a 1 KiB record added to a running CRC
//! (`benches/crc_combine.rs`, two runs in `bench-harness/results/2026-12-05/r33/`); on other
//! CPUs it picks the best of what they have, down to a table. The values are the same: the
//! tests check them against the `crc32c` crate at every length and alignment.
//!
//! [`crc32c_combine`] is for [`super::BatchBuilder`]: it computes its records' CRC as they are
//! pushed, while they are in the cache, and joins it to the header's (written last) when the
//! batch is finished. The crc32c crate's own `crc32c_combine` (zlib's method) builds the
//! operators that append 1, 2, 4, ... zero bytes to a CRC on every call: 16 µs for 4 KiB and
//! 44 µs for 1 MiB on the reference machine, more than the CRC of the bytes themselves. Here
//! they are built once; a combine then costs one 32x32-bit operator applied per bit set in the
//! length. The result is checked against that crate's combine in the tests.

use std::sync::OnceLock;

/// CRC32C of `data`.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(data)
}

/// CRC32C of `a ++ data` from `crc` = `crc32c(a)` (the running CRC of a stream).
#[inline]
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    let mut d =
        crc_fast::Digest::new_with_init_state(crc_fast::CrcAlgorithm::Crc32Iscsi, u64::from(!crc));
    d.update(data);
    d.finalize() as u32
}

/// The CRC-32C polynomial, bit-reflected.
const POLY: u32 = 0x82F6_3B78;

/// A linear operator on a 32-bit CRC register: column `i` is the image of bit `i`.
type Op = [u32; 32];

fn apply(op: &Op, v: u32) -> u32 {
    // Every column masked by its bit, without a branch: the bits of a CRC are random, and a
    // branch on each mispredicted half the time: 694 ns a combine at 4-5 KiB, 56 ns without
    // (`benches/crc_combine.rs`).
    let mut out = 0;
    for (i, &column) in op.iter().enumerate() {
        out ^= column & 0u32.wrapping_sub((v >> i) & 1);
    }
    out
}

/// `op` applied twice.
fn square(op: &Op) -> Op {
    let mut out = [0; 32];
    for (o, &column) in out.iter_mut().zip(op.iter()) {
        *o = apply(op, column);
    }
    out
}

/// `ZEROS[k]` appends 2^k zero bytes to a CRC register.
fn zeros() -> &'static [Op; 64] {
    static ZEROS: OnceLock<[Op; 64]> = OnceLock::new();
    ZEROS.get_or_init(|| {
        // One zero bit: shift right, folding the polynomial in where bit 0 falls out.
        let mut bit: Op = [0; 32];
        bit[0] = POLY;
        for (i, column) in bit.iter_mut().enumerate().skip(1) {
            *column = 1 << (i - 1);
        }
        let mut ops = [[0; 32]; 64];
        ops[0] = square(&square(&square(&bit))); // 8 bits: one byte
        for k in 1..64 {
            ops[k] = square(&ops[k - 1]);
        }
        ops
    })
}

/// `crc32c(a ++ b)` from `crc32c(a)`, `crc32c(b)` and `b.len()`. An empty `b` gives `crc_a`
/// whatever `crc_b` says, as zlib's combine and the crc32c crate's do (the CRC of nothing is
/// 0, so for a true `crc_b` both answers agree).
pub fn crc32c_combine(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    if len_b == 0 {
        return crc_a;
    }
    let ops = zeros();
    let mut crc = crc_a;
    let mut len = len_b as u64;
    let mut k = 0;
    while len != 0 {
        if len & 1 == 1 {
            crc = apply(&ops[k], crc);
        }
        len >>= 1;
        k += 1;
    }
    crc ^ crc_b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every length up to a few vector blocks and past the sizes where `crc-fast` changes its
    /// method, at every alignment modulo 64, from the standard start and from a running CRC.
    #[test]
    fn it_computes_the_crc32c_crates_values_at_every_length_and_alignment() {
        let data: Vec<u8> =
            (0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let lens = (0..1100).chain([4095, 4096, 4097, 16_383, 16_384, 16_385, 65_536, 69_000]);
        for len in lens {
            for off in [0, 1, 3, 7, 8, 13, 31, 63] {
                let s = &data[off..off + len.min(data.len() - off)];
                assert_eq!(crc32c(s), crc32c::crc32c(s), "len {} at {off}", s.len());
                for start in [0, 0xFFFF_FFFF, 0x1234_5678] {
                    assert_eq!(
                        crc32c_append(start, s),
                        crc32c::crc32c_append(start, s),
                        "len {} at {off} from {start:#x}",
                        s.len()
                    );
                }
            }
        }
        assert_eq!(crc32c(b"123456789"), 0xE306_9283, "the CRC-32C check value");
    }

    proptest! {
        #[test]
        fn a_crc_grown_in_pieces_is_the_crc_of_the_whole(
            data in proptest::collection::vec(any::<u8>(), 0..40_000),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
            cuts.sort_unstable();
            let mut crc = 0;
            let mut at = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                crc = crc32c_append(crc, &data[at..c]);
                at = c;
            }
            prop_assert_eq!(crc, crc32c::crc32c(&data));
        }

        #[test]
        fn combining_two_crcs_gives_the_crc_of_the_concatenation(
            a in proptest::collection::vec(any::<u8>(), 0..300),
            b in proptest::collection::vec(any::<u8>(), 0..3000),
        ) {
            let whole: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
            let combined = crc32c_combine(crc32c::crc32c(&a), crc32c::crc32c(&b), b.len());
            prop_assert_eq!(combined, crc32c::crc32c(&whole));
        }

        /// Found at 4,000 cases (round 31): with `len` 0 this returned `crc_a ^ crc_b`, the
        /// crate `crc_a` (see `an_empty_second_part_gives_the_first_crc`).
        #[test]
        fn it_agrees_with_the_crc32c_crate_at_any_length(
            crc_a in any::<u32>(),
            crc_b in any::<u32>(),
            len in prop_oneof![0usize..70_000, any::<u32>().prop_map(|l| l as usize)],
        ) {
            prop_assert_eq!(
                crc32c_combine(crc_a, crc_b, len),
                crc32c::crc32c_combine(crc_a, crc_b, len)
            );
        }
    }

    #[test]
    fn an_empty_second_part_gives_the_first_crc() {
        assert_eq!(crc32c_combine(0, 1, 0), 0);
        assert_eq!(crc32c_combine(0xDEAD_BEEF, 0x1234_5678, 0), 0xDEAD_BEEF);
        assert_eq!(crc32c_combine(0, 1, 0), crc32c::crc32c_combine(0, 1, 0));
    }
}
