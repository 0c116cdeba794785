//! A q-gram bitset that tells the redactor where a pattern may start.

use zeroize::Zeroizing;

/// A bitset of hashed `q`-grams taken from the first `q + stride - 1` bytes of every
/// pattern. The text is probed every `stride` bytes (one multiply and one bit test), and
/// the automata run only around hits.
///
/// Grams are folded (`| 0x20` on every byte) before hashing, so one filter serves the
/// exact and the case-free automaton; folding merges a few byte pairs, which costs a
/// little selectivity and never a miss.
pub(super) struct Prefilter {
    pub(super) q: usize,
    pub(super) stride: usize,
    mask: u64,
    shift: u32,
    bits: Vec<u64>,
    /// The same grams hashed with their offset in the pattern: at a hit, only the starts
    /// whose offset is here get an automaton search.
    offsets: Vec<u64>,
}

const FOLD: u64 = 0x2020_2020_2020_2020;

impl Prefilter {
    /// The shortest q-gram worth filtering on; shorter patterns disable the filter.
    const MIN_Q: usize = 4;
    /// The longest pattern prefix sampled (bounds the filter's size).
    const MAX_SPAN: usize = 16;

    pub(super) fn new<'p>(
        patterns: impl Iterator<Item = &'p Zeroizing<Vec<u8>>> + Clone,
    ) -> Option<Prefilter> {
        let span = patterns.clone().map(|p| p.len()).min()?.min(Self::MAX_SPAN);
        let q = span.min(8);
        if q < Self::MIN_Q {
            return None;
        }
        let stride = span - q + 1;
        // About 16 bits per inserted gram (~6 % false positives per probe): measured
        // faster than a sparser table that falls out of the L2 cache.
        let grams = patterns.clone().count() * stride;
        let nbits = (grams * 16).next_power_of_two().clamp(1 << 12, 1 << 26);
        let mut pf = Prefilter {
            q,
            stride,
            mask: if q == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * q)) - 1
            },
            shift: 64 - nbits.trailing_zeros(),
            bits: vec![0u64; nbits / 64],
            offsets: vec![0u64; nbits / 64],
        };
        for p in patterns {
            for offset in 0..stride {
                let w = window(p, offset);
                let h = pf.hash(w);
                pf.bits[h / 64] |= 1 << (h % 64);
                let h = pf.hash_at(w, offset);
                pf.offsets[h / 64] |= 1 << (h % 64);
            }
        }
        Some(pf)
    }

    #[inline]
    fn hash_at(&self, w: u64, offset: usize) -> usize {
        let w = ((w | FOLD) & self.mask) ^ (offset as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        (w.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// Calls `f(s)` for each start `s` in `(p - stride, p]`, not before `from`, whose
    /// q-gram at `p` is known at offset `p - s` of some pattern (call after [`hit`]).
    ///
    /// [`hit`]: Self::hit
    #[inline]
    pub(super) fn starts(&self, hay: &[u8], p: usize, from: usize, mut f: impl FnMut(usize)) {
        let w = window(hay, p);
        for offset in 0..self.stride.min(p + 1 - from) {
            let h = self.hash_at(w, offset);
            if self.offsets[h / 64] & (1 << (h % 64)) != 0 {
                f(p - offset);
            }
        }
    }

    #[inline]
    fn hash(&self, w: u64) -> usize {
        (((w | FOLD) & self.mask).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    pub(super) fn hit(&self, hay: &[u8], p: usize) -> bool {
        let h = self.hash(window(hay, p));
        self.bits[h / 64] & (1 << (h % 64)) != 0
    }

    /// Heap bytes held.
    pub(super) fn memory_usage(&self) -> usize {
        (self.bits.len() + self.offsets.len()) * 8
    }
}

/// Up to 8 bytes of `hay` from `p`, little-endian, zero-padded.
#[inline]
fn window(hay: &[u8], p: usize) -> u64 {
    match hay.get(p..p + 8) {
        Some(w) => {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            u64::from_le_bytes(b)
        }
        None => {
            let mut b = [0u8; 8];
            let tail = hay.get(p..).unwrap_or_default();
            b[..tail.len()].copy_from_slice(tail);
            u64::from_le_bytes(b)
        }
    }
}
