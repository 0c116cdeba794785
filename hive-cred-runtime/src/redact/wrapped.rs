//! Base64 wrapped across line breaks (GNU `base64`, MIME at 76 columns, PEM at 64).
//!
//! A region is a run of base64 characters (both alphabets and `=`) broken by `\n` or
//! `\r\n` with a base64 character on both sides of every break. The base64 automaton
//! runs over each region with its breaks removed, and every match is mapped back onto
//! the original text (so it spans the breaks inside it). Ordinary text has short
//! regions (`word\nword`), so this pass costs one `memchr` over the text plus a little
//! per line break.

use aho_corasick::{AhoCorasick, Anchored, Input};

use super::prefilter::Prefilter;

/// Base64 and base64url characters and `=`, as a table (this pass tests every byte of
/// every region; a table measured faster than the comparisons).
static BASE64: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_' | b'=');
        b += 1;
    }
    t
};

#[inline]
fn is_base64(b: u8) -> bool {
    BASE64[usize::from(b)]
}

/// The end of the line break at `p` (`\n` or `\r\n`), if there is one.
#[inline]
fn break_end(hay: &[u8], p: usize) -> Option<usize> {
    match hay.get(p..p + 2) {
        Some([b'\r', b'\n']) => Some(p + 2),
        _ if hay.get(p) == Some(&b'\n') => Some(p + 1),
        _ => None,
    }
}

/// Calls `found(start, end, pattern)` for every match of `ac` that crosses a line break
/// inside a wrapped region of `hay[from..]`. With a prefilter, `ac` must support
/// anchored searches and candidates come from the filter's grid over each region.
pub(super) fn hits(
    ac: &AhoCorasick,
    prefilter: Option<&Prefilter>,
    min_len: usize,
    hay: &[u8],
    from: usize,
    found: &mut dyn FnMut(usize, usize, usize),
) {
    let mut stripped: Vec<u8> = Vec::new();
    // (start in `stripped`, start in `hay`) of each line's run.
    let mut segments: Vec<(usize, usize)> = Vec::new();
    let mut i = from;
    while let Some(off) = memchr::memchr(b'\n', &hay[i..]) {
        let nl = i + off;
        let left_end = if nl > from && hay[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        let joinable = left_end > from
            && is_base64(hay[left_end - 1])
            && hay.get(nl + 1).copied().is_some_and(is_base64);
        if !joinable {
            i = nl + 1;
            continue;
        }
        let mut start = left_end;
        while start > from && is_base64(hay[start - 1]) {
            start -= 1;
        }
        stripped.clear();
        segments.clear();
        segments.push((0, start));
        stripped.extend_from_slice(&hay[start..left_end]);
        let mut p = nl + 1;
        loop {
            let run = p;
            while p < hay.len() && is_base64(hay[p]) {
                p += 1;
            }
            segments.push((stripped.len(), run));
            stripped.extend_from_slice(&hay[run..p]);
            match break_end(hay, p) {
                Some(q) if p > run && hay.get(q).copied().is_some_and(is_base64) => p = q,
                _ => break,
            }
        }
        i = p;
        if stripped.len() < min_len {
            continue;
        }
        let segment_of = |x: usize| segments.partition_point(|s| s.0 <= x) - 1;
        let mut report = |m: aho_corasick::Match| {
            let (first, last) = (segment_of(m.start()), segment_of(m.end() - 1));
            if first != last {
                let a = segments[first].1 + (m.start() - segments[first].0);
                let b = segments[last].1 + (m.end() - 1 - segments[last].0) + 1;
                found(a, b, m.pattern().as_usize());
            }
        };
        match prefilter {
            Some(pf) => {
                let mut g = pf.stride - 1;
                while g + pf.q <= stripped.len() {
                    if pf.hit(&stripped, g) {
                        pf.starts(&stripped, g, 0, |s| {
                            let input = Input::new(&stripped).range(s..).anchored(Anchored::Yes);
                            if let Ok(Some(m)) = ac.try_find(input) {
                                report(m);
                            }
                        });
                    }
                    g += pf.stride;
                }
            }
            None => {
                // Every start that has a match, with its longest match.
                let mut pos = 0;
                while let Some(m) = ac.find(Input::new(&stripped).range(pos..)) {
                    pos = m.start() + 1;
                    report(m);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_pattern_across_lf_and_crlf_breaks_only() {
        let ac = AhoCorasick::new(["QUJDREVGR0g"]).expect("builds");
        let mut got = Vec::new();
        let text = b"x QUJD\nREVG\r\nR0g y QUJDREVGR0g QUJD\n\nREVGR0g";
        hits(&ac, None, 8, text, 0, &mut |a, b, _| got.push((a, b)));
        // Only the wrapped one: the unwrapped one is the plain pass's, the one across a
        // blank line is not a wrapped blob.
        assert_eq!(got, vec![(2, 16)]);
        assert_eq!(&text[2..16], b"QUJD\nREVG\r\nR0g");
    }
}
