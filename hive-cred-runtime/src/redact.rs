//! [`Redactor`]: scrubs secret values (and their common encodings) out of text.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, Anchored, Input, Match, MatchKind, StartKind};
use hive_cred_core::{Error, ErrorKind, ExposeSecret, Result, SecretString};
use zeroize::Zeroizing;

use crate::encoding;

/// The default shortest secret value that is redacted, in bytes.
pub const DEFAULT_MIN_SECRET_LEN: usize = 6;

/// The shortest aligned-base64 fragment matched (shorter fragments would match by
/// chance in ordinary base64 data).
const MIN_ALIGNED_FRAGMENT: usize = 8;

/// The marker that replaces a secret: `[hive:<id>.<key>]`.
pub fn marker(id: &str, key: &str) -> String {
    format!("[hive:{id}.{key}]")
}

/// Replaces secret values in text with `[hive:<id>.<key>]` markers.
///
/// One Aho-Corasick automaton (leftmost-longest) holds every secret in every supported
/// [`Encoding`](crate::Encoding): raw, base64 and base64url (padded, unpadded and
/// inside longer encoded blobs), URL-encoded, JSON-escaped and hex (both cases). A
/// redactor is immutable; the runtime's [`RedactorHandle`] builds a new one when the
/// credentials it has handed out change.
///
/// # Behavior
/// - Text without any pattern comes back unchanged (and borrowed: no copy).
/// - Where patterns overlap, the leftmost, then the longest, wins, so a padded base64
///   value is replaced whole rather than leaving its `=`.
/// - Values shorter than [`min_secret_len`](RedactorBuilder::min_secret_len) (default
///   [`DEFAULT_MIN_SECRET_LEN`]) are not redacted: masking every `abc` in a text would
///   make it unreadable and reveal the value by its pattern.
/// - The automaton keeps the patterns in memory for as long as the redactor lives.
///
/// ```
/// use hive_cred_runtime::Redactor;
///
/// let r = Redactor::builder().secret("brave_search", "api_key", "BSA-0123456789".into()).build()?;
/// assert_eq!(
///     r.redact("GET /search?key=BSA-0123456789 -> 200"),
///     "GET /search?key=[hive:brave_search.api_key] -> 200"
/// );
/// # Ok::<(), hive_cred_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Redactor {
    automaton: Option<AhoCorasick>,
    /// Candidate start positions; `None` when some pattern is too short for it.
    prefilter: Option<Arc<Prefilter>>,
    /// The marker of each pattern, by pattern index.
    markers: Vec<Arc<str>>,
    secrets: usize,
    max_pattern_len: usize,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets)
            .field("patterns", &self.markers.len())
            .finish_non_exhaustive()
    }
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::empty()
    }
}

/// Builder for [`Redactor`].
#[must_use]
pub struct RedactorBuilder {
    secrets: Vec<(String, String, SecretString)>,
    min_secret_len: usize,
}

impl fmt::Debug for RedactorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactorBuilder")
            .field("secrets", &self.secrets.len())
            .field("min_secret_len", &self.min_secret_len)
            .finish_non_exhaustive()
    }
}

impl Default for RedactorBuilder {
    fn default() -> Self {
        RedactorBuilder {
            secrets: Vec::new(),
            min_secret_len: DEFAULT_MIN_SECRET_LEN,
        }
    }
}

impl RedactorBuilder {
    /// Adds key `key` of credential `id` with its value.
    pub fn secret(mut self, id: &str, key: &str, value: SecretString) -> Self {
        self.secrets.push((id.to_string(), key.to_string(), value));
        self
    }

    /// Adds several secrets.
    pub fn secrets<I>(mut self, secrets: I) -> Self
    where
        I: IntoIterator<Item = (String, String, SecretString)>,
    {
        self.secrets.extend(secrets);
        self
    }

    /// The shortest value (in bytes) that is redacted. Default: [`DEFAULT_MIN_SECRET_LEN`].
    pub fn min_secret_len(mut self, len: usize) -> Self {
        self.min_secret_len = len.max(1);
        self
    }

    /// Builds the automaton. Fails only if the automaton would exceed the library's
    /// size limits (millions of patterns).
    pub fn build(mut self) -> Result<Redactor> {
        // Deterministic: the first (id, key) in order wins a value shared by several keys.
        self.secrets
            .sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
        // (pattern, insertion order, marker); deduplicated below, first insertion wins.
        let mut entries: Vec<(Zeroizing<Vec<u8>>, usize, Arc<str>)> = Vec::new();
        let mut secrets = 0;
        let min_inner = MIN_ALIGNED_FRAGMENT.max(self.min_secret_len);
        for (id, key, value) in &self.secrets {
            // EXPOSE: the redactor must know the value to find it in text.
            let raw = value.expose_secret();
            if raw.len() < self.min_secret_len {
                tracing::debug!(
                    target: "hive_cred::redact",
                    id = id.as_str(),
                    key = key.as_str(),
                    "value shorter than min_secret_len is not redacted"
                );
                continue;
            }
            secrets += 1;
            let label: Arc<str> = marker(id, key).into();
            for p in encoding::patterns(raw, min_inner) {
                entries.push((p, entries.len(), label.clone()));
            }
        }
        entries.sort_unstable_by(|a, b| a.0.as_slice().cmp(b.0.as_slice()).then(a.1.cmp(&b.1)));
        entries.dedup_by(|later, first| later.0.as_slice() == first.0.as_slice());
        if entries.is_empty() {
            return Ok(Redactor::empty());
        }
        let (patterns, markers): (Vec<Zeroizing<Vec<u8>>>, Vec<Arc<str>>) =
            entries.into_iter().map(|(p, _, m)| (p, m)).unzip();
        let max_pattern_len = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        let prefilter = Prefilter::new(&patterns).map(Arc::new);
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .start_kind(if prefilter.is_some() {
                StartKind::Both
            } else {
                StartKind::Unanchored
            })
            .build(patterns.iter().map(|p| p.as_slice()))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("could not build the redaction automaton: {e}"),
                )
                .with_context("patterns", patterns.len())
            })?;
        Ok(Redactor {
            automaton: Some(automaton),
            prefilter,
            markers,
            secrets,
            max_pattern_len,
        })
    }
}

impl Redactor {
    /// A builder.
    pub fn builder() -> RedactorBuilder {
        RedactorBuilder::default()
    }

    /// A redactor that knows no secrets.
    pub fn empty() -> Self {
        Redactor {
            automaton: None,
            prefilter: None,
            markers: Vec::new(),
            secrets: 0,
            max_pattern_len: 0,
        }
    }

    /// How many secret values it redacts.
    pub fn secret_count(&self) -> usize {
        self.secrets
    }

    /// How many patterns (secrets times distinct encodings) the automaton holds.
    pub fn pattern_count(&self) -> usize {
        self.markers.len()
    }

    /// The longest pattern, in bytes (a streaming redactor holds back one less).
    pub fn max_pattern_len(&self) -> usize {
        self.max_pattern_len
    }

    /// Whether `text` contains any known secret in any supported encoding.
    pub fn contains_secret(&self, text: impl AsRef<[u8]>) -> bool {
        let text = text.as_ref();
        self.find(text, 0, text.len()).is_some()
    }

    /// The leftmost-longest match starting in `start..limit`.
    fn find(&self, hay: &[u8], start: usize, limit: usize) -> Option<Match> {
        let ac = self.automaton.as_ref()?;
        let Some(pf) = &self.prefilter else {
            return ac
                .find(Input::new(hay).range(start..))
                .filter(|m| m.start() < limit);
        };
        // Every match contains, at some grid position g (every `stride` bytes from
        // `start`), a q-gram the filter knows at offset g - s < stride of its start s.
        // At the first grid hit, the candidate starts (g - stride, g] are tried in order
        // with anchored searches; the first that matches is the leftmost match (earlier
        // starts would have hit an earlier grid position) and the anchored
        // leftmost-longest search gives its longest pattern.
        let mut g = start + pf.stride - 1;
        while g + pf.q <= hay.len() {
            let first = (g + 1).saturating_sub(pf.stride).max(start);
            if first >= limit {
                return None;
            }
            if pf.hit(hay, g) {
                for s in first..=g.min(limit - 1) {
                    let input = Input::new(hay).range(s..).anchored(Anchored::Yes);
                    match ac.try_find(input) {
                        Ok(Some(m)) => return Some(m),
                        Ok(None) => {}
                        // Not reachable (built with anchored support); stay correct anyway.
                        Err(_) => {
                            return ac
                                .find(Input::new(hay).range(s..))
                                .filter(|m| m.start() < limit);
                        }
                    }
                }
            }
            g += pf.stride;
        }
        None
    }

    /// Replaces every secret in `text` with its marker. Borrows when nothing matched.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match self.redact_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Patterns are whole UTF-8 strings or ASCII, so matches start and end on
            // character boundaries and markers are ASCII: the output is valid UTF-8.
            Cow::Owned(bytes) => Cow::Owned(
                String::from_utf8(bytes)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
        }
    }

    /// Replaces every secret in `bytes` with its marker. Borrows when nothing matched.
    pub fn redact_bytes<'t>(&self, bytes: &'t [u8]) -> Cow<'t, [u8]> {
        let Some(first) = self.find(bytes, 0, bytes.len()) else {
            return Cow::Borrowed(bytes);
        };
        let mut out = Vec::with_capacity(bytes.len());
        let mut pos = 0;
        let mut next = Some(first);
        while let Some(m) = next {
            out.extend_from_slice(&bytes[pos..m.start()]);
            out.extend_from_slice(self.markers[m.pattern().as_usize()].as_bytes());
            pos = m.end();
            next = self.find(bytes, pos, bytes.len());
        }
        out.extend_from_slice(&bytes[pos..]);
        Cow::Owned(out)
    }

    /// Redacts the `Display` of an error (or anything else).
    pub fn redact_display(&self, value: &dyn fmt::Display) -> String {
        let text = value.to_string();
        match self.redact(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(s) => s,
        }
    }

    /// A streaming redactor over this one.
    pub fn stream(self: &Arc<Self>) -> StreamRedactor {
        StreamRedactor::new(self.clone())
    }

    /// Redacts `buf` as far as is final and returns where the undecided tail starts.
    /// Output for `buf[..returned]` is appended to `out`.
    fn redact_prefix(&self, buf: &[u8], safe_end: usize, out: &mut Vec<u8>) -> usize {
        let mut pos = 0;
        while let Some(m) = self.find(buf, pos, safe_end) {
            out.extend_from_slice(&buf[pos..m.start()]);
            out.extend_from_slice(self.markers[m.pattern().as_usize()].as_bytes());
            pos = m.end();
        }
        let end = pos.max(safe_end);
        out.extend_from_slice(&buf[pos..end]);
        end
    }
}

/// A bitset of hashed `q`-grams taken from the first `q + stride - 1` bytes of every
/// pattern. The text is probed every `stride` bytes (one multiply and one bit test), and
/// the automaton runs only around hits.
struct Prefilter {
    q: usize,
    stride: usize,
    mask: u64,
    shift: u32,
    bits: Vec<u64>,
}

impl Prefilter {
    /// The shortest q-gram worth filtering on; shorter patterns disable the filter.
    const MIN_Q: usize = 4;
    /// The longest pattern prefix sampled (bounds the filter's size).
    const MAX_SPAN: usize = 16;

    fn new(patterns: &[Zeroizing<Vec<u8>>]) -> Option<Prefilter> {
        let span = patterns.iter().map(|p| p.len()).min()?.min(Self::MAX_SPAN);
        let q = span.min(8);
        if q < Self::MIN_Q {
            return None;
        }
        let stride = span - q + 1;
        // About 16 bits per inserted gram (~6 % false positives per probe): measured
        // faster than a sparser table that falls out of the L2 cache.
        let grams = patterns.len() * stride;
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
        };
        for p in patterns {
            for offset in 0..stride {
                let h = pf.hash(window(p, offset));
                pf.bits[h / 64] |= 1 << (h % 64);
            }
        }
        Some(pf)
    }

    #[inline]
    fn hash(&self, w: u64) -> usize {
        ((w & self.mask).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    fn hit(&self, hay: &[u8], p: usize) -> bool {
        let h = self.hash(window(hay, p));
        self.bits[h / 64] & (1 << (h % 64)) != 0
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

/// Redacts a stream of chunks, catching secrets split across chunk boundaries.
///
/// Holds back the last `max_pattern_len - 1` bytes of input (plus at most 3 to keep
/// UTF-8 characters whole) until more input or [`finish`](Self::finish) decides them.
/// The concatenated output equals [`Redactor::redact`] of the concatenated input.
///
/// ```
/// use std::sync::Arc;
/// use hive_cred_runtime::Redactor;
///
/// let r = Arc::new(Redactor::builder().secret("gh", "token", "ghp_abcdef123456".into()).build()?);
/// let mut s = r.stream();
/// let mut out = s.push("token=ghp_abc");
/// out += &s.push("def123456 ok");
/// out += &s.finish();
/// assert_eq!(out, "token=[hive:gh.token] ok");
/// # Ok::<(), hive_cred_core::Error>(())
/// ```
pub struct StreamRedactor {
    redactor: Arc<Redactor>,
    pending: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for StreamRedactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRedactor")
            .field("redactor", &self.redactor)
            .field("pending_len", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl StreamRedactor {
    /// A stream over `redactor`.
    pub fn new(redactor: Arc<Redactor>) -> Self {
        StreamRedactor {
            redactor,
            pending: Zeroizing::new(Vec::new()),
        }
    }

    /// Feeds a chunk; returns the text that is now final.
    pub fn push(&mut self, chunk: &str) -> String {
        let out = self.push_inner(chunk.as_bytes(), true);
        into_string(out)
    }

    /// Feeds a chunk of bytes; returns the bytes that are now final.
    pub fn push_bytes(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.push_inner(chunk, false)
    }

    fn push_inner(&mut self, chunk: &[u8], utf8: bool) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let hold = self.redactor.max_pattern_len.saturating_sub(1);
        let mut safe_end = self.pending.len().saturating_sub(hold);
        if utf8 {
            // Never cut inside a character: continuation bytes are 0b10xx_xxxx.
            while safe_end > 0
                && safe_end < self.pending.len()
                && self.pending[safe_end] & 0xC0 == 0x80
            {
                safe_end -= 1;
            }
        }
        let mut out = Vec::with_capacity(self.pending.len());
        let done = self
            .redactor
            .redact_prefix(&self.pending, safe_end, &mut out);
        self.pending.drain(..done);
        out
    }

    /// How many bytes are held back.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Ends the stream; returns the redacted held-back text.
    pub fn finish(mut self) -> String {
        into_string(self.finish_bytes_inner())
    }

    /// Ends the stream; returns the redacted held-back bytes.
    pub fn finish_bytes(mut self) -> Vec<u8> {
        self.finish_bytes_inner()
    }

    fn finish_bytes_inner(&mut self) -> Vec<u8> {
        let pending = std::mem::take(&mut *self.pending);
        let pending = Zeroizing::new(pending);
        self.redactor.redact_bytes(&pending).into_owned()
    }
}

fn into_string(bytes: Vec<u8>) -> String {
    // Input was UTF-8 and cuts are on character boundaries (see `Redactor::redact`).
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// An [`std::io::Write`] that redacts everything written through it.
///
/// A secret split across two `write` calls is caught. [`flush`](std::io::Write::flush)
/// and drop write out the held-back tail, so a secret split across a flush is not.
#[derive(Debug)]
pub struct RedactingWriter<W: std::io::Write> {
    inner: W,
    stream: StreamRedactor,
}

impl<W: std::io::Write> RedactingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W, redactor: Arc<Redactor>) -> Self {
        RedactingWriter {
            inner,
            stream: StreamRedactor::new(redactor),
        }
    }

    fn drain(&mut self) -> std::io::Result<()> {
        let tail = self.stream.finish_bytes_inner();
        self.inner.write_all(&tail)
    }
}

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let out = self.stream.push_bytes(buf);
        self.inner.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.drain()?;
        self.inner.flush()
    }
}

impl<W: std::io::Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; the inner writer reports its own on use.
        let _ = self.drain();
        let _ = self.inner.flush();
    }
}

/// A live view of the secrets a runtime has handed out. [`current`](Self::current)
/// returns a [`Redactor`] over all of them, rebuilt only when they changed.
///
/// Remembers, per credential key, the current value and the last
/// [`RETAINED_VALUES`]` - 1` replaced ones (a refreshed-away token may still be valid and
/// may still be in a transcript).
#[derive(Clone)]
pub struct RedactorHandle {
    inner: Arc<std::sync::Mutex<Registry>>,
}

/// How many values per credential key the handle redacts (current + replaced ones).
pub const RETAINED_VALUES: usize = 4;

struct Registry {
    values: HashMap<(String, String), Vec<SecretString>>,
    version: u64,
    built: Option<(u64, Arc<Redactor>)>,
    min_secret_len: usize,
}

impl fmt::Debug for RedactorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reg = self.lock();
        f.debug_struct("RedactorHandle")
            .field("keys", &reg.values.len())
            .field("version", &reg.version)
            .finish_non_exhaustive()
    }
}

impl Default for RedactorHandle {
    fn default() -> Self {
        RedactorHandle::new(DEFAULT_MIN_SECRET_LEN)
    }
}

impl RedactorHandle {
    /// An empty handle redacting values of at least `min_secret_len` bytes.
    pub fn new(min_secret_len: usize) -> Self {
        RedactorHandle {
            inner: Arc::new(std::sync::Mutex::new(Registry {
                values: HashMap::new(),
                version: 0,
                built: None,
                min_secret_len,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // Every update is a single insert; the map stays consistent after a panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records every key value of a credential (called for each credential the store
    /// loads or saves).
    pub fn observe(&self, credential: &hive_cred_core::CredentialObject) {
        let mut reg = self.lock();
        let mut changed = false;
        for key in credential.keys() {
            let slot = reg
                .values
                .entry((credential.id().to_string(), key.name().to_string()))
                .or_default();
            // EXPOSE: compare with the known values to detect a new (refreshed) value.
            let new = key.value().expose_secret();
            // EXPOSE: same comparison, on the stored side.
            if slot.first().is_some_and(|v| v.expose_secret() == new) {
                continue;
            }
            // EXPOSE: a value seen before moves back to the front instead of duplicating.
            slot.retain(|v| v.expose_secret() != new);
            slot.insert(0, key.value().clone());
            slot.truncate(RETAINED_VALUES);
            changed = true;
        }
        if changed {
            reg.version += 1;
        }
    }

    /// Adds one value by hand (a secret the runtime did not hand out, e.g. a client
    /// secret read from elsewhere).
    pub fn add(&self, id: &str, key: &str, value: SecretString) {
        let mut reg = self.lock();
        let slot = reg
            .values
            .entry((id.to_string(), key.to_string()))
            .or_default();
        slot.insert(0, value);
        slot.truncate(RETAINED_VALUES);
        reg.version += 1;
    }

    /// The redactor over every value seen so far.
    pub fn current(&self) -> Arc<Redactor> {
        let (version, builder) = {
            let reg = self.lock();
            if let Some((v, r)) = &reg.built {
                if *v == reg.version {
                    return r.clone();
                }
            }
            let secrets = reg.values.iter().flat_map(|((id, key), values)| {
                values
                    .iter()
                    .map(move |v| (id.clone(), key.clone(), v.clone()))
            });
            (
                reg.version,
                Redactor::builder()
                    .min_secret_len(reg.min_secret_len)
                    .secrets(secrets),
            )
        };
        let redactor = match builder.build() {
            Ok(r) => Arc::new(r),
            Err(e) => {
                // Only reachable past the automaton's size limits: keep the last good one.
                tracing::error!(target: "hive_cred::redact", error = %e, "could not rebuild the redactor");
                return self
                    .lock()
                    .built
                    .as_ref()
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default();
            }
        };
        let mut reg = self.lock();
        if reg.built.as_ref().is_none_or(|(v, _)| *v < version) {
            reg.built = Some((version, redactor.clone()));
        }
        redactor
    }
}

/// A [`tracing_subscriber::fmt::MakeWriter`] that redacts log output with the current
/// redactor of a [`RedactorHandle`].
///
/// ```no_run
/// # async fn demo(runtime: hive_cred_runtime::AgentRuntime) {
/// tracing_subscriber::fmt()
///     .with_writer(runtime.redacting_make_writer(std::io::stderr))
///     .init();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RedactingMakeWriter<M> {
    make: M,
    handle: RedactorHandle,
}

impl<M> RedactingMakeWriter<M> {
    /// Wraps `make`.
    pub fn new(make: M, handle: RedactorHandle) -> Self {
        RedactingMakeWriter { make, handle }
    }
}

impl<'a, M> tracing_subscriber::fmt::MakeWriter<'a> for RedactingMakeWriter<M>
where
    M: tracing_subscriber::fmt::MakeWriter<'a>,
{
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter::new(self.make.make_writer(), self.handle.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_cred_core::testkit::CANARY;
    use hive_cred_core::{CredentialObject, CredentialType};
    use std::io::Write;

    fn one(secret: &str) -> Arc<Redactor> {
        Arc::new(
            Redactor::builder()
                .secret("c", "k", secret.into())
                .build()
                .unwrap(),
        )
    }

    #[test]
    fn leftmost_longest_replaces_padded_base64_whole() {
        let r = one("abcd1234"); // base64 "YWJjZDEyMzQ=" ends in padding
        assert_eq!(r.redact("x YWJjZDEyMzQ= y"), "x [hive:c.k] y");
        assert_eq!(r.redact("x YWJjZDEyMzQ y"), "x [hive:c.k] y");
    }

    #[test]
    fn no_match_borrows() {
        let r = one("abcd1234");
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
        assert!(matches!(
            Redactor::empty().redact("abcd1234"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn short_values_are_skipped() {
        let r = Redactor::builder()
            .secret("c", "short", "abc".into())
            .secret("c", "long", "abcdefgh".into())
            .build()
            .unwrap();
        assert_eq!(r.secret_count(), 1);
        assert_eq!(r.redact("abc abcdefgh"), "abc [hive:c.long]");
        let r = Redactor::builder()
            .min_secret_len(2)
            .secret("c", "short", "abc".into())
            .build()
            .unwrap();
        assert_eq!(r.redact("abc"), "[hive:c.short]");
    }

    #[test]
    fn stream_holds_back_only_what_could_be_a_secret() {
        let r = one("abcd1234");
        let mut s = r.stream();
        let out = s.push("hello world, then abcd12");
        assert!(!out.contains("abcd12"));
        assert!(s.pending_len() < r.max_pattern_len());
        let rest = s.push("34 done");
        let tail = s.finish();
        assert_eq!(
            format!("{out}{rest}{tail}"),
            "hello world, then [hive:c.k] done"
        );
    }

    #[test]
    fn stream_keeps_utf8_whole() {
        let r = one("abcd1234");
        let mut s = r.stream();
        let mut out = String::new();
        for c in ["é", "ü", "🦀🦀🦀", "abcd", "1234", "ééé"] {
            out.push_str(&s.push(c));
        }
        out.push_str(&s.finish());
        assert_eq!(out, "éü🦀🦀🦀[hive:c.k]ééé");
    }

    #[test]
    fn writer_redacts_split_writes_and_flushes_tail() {
        let r = one("abcd1234");
        let mut buf = Vec::new();
        {
            let mut w = RedactingWriter::new(&mut buf, r);
            w.write_all(b"a=abcd").unwrap();
            w.write_all(b"1234 b").unwrap();
        }
        assert_eq!(buf, b"a=[hive:c.k] b");
    }

    #[test]
    fn handle_tracks_refreshed_values_and_keeps_recent_ones() {
        let h = RedactorHandle::default();
        let mut c = CredentialObject::new("gh", CredentialType::OAuth2).unwrap();
        c.set_key("access_token", "token-one-111", None).unwrap();
        h.observe(&c);
        let first = h.current();
        assert!(Arc::ptr_eq(&first, &h.current()), "unchanged: no rebuild");
        c.set_key("access_token", "token-two-222", None).unwrap();
        h.observe(&c);
        let second = h.current();
        assert_eq!(
            second.redact("token-one-111 token-two-222"),
            "[hive:gh.access_token] [hive:gh.access_token]"
        );
        for i in 0..RETAINED_VALUES {
            c.set_key("access_token", format!("token-new-{i:03}"), None)
                .unwrap();
            h.observe(&c);
        }
        assert_eq!(h.current().redact("token-one-111"), "token-one-111");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let r = Redactor::builder()
            .secret("c", "k", CANARY.into())
            .build()
            .unwrap();
        assert!(!format!("{r:?}").contains(CANARY));
        let b = Redactor::builder().secret("c", "k", CANARY.into());
        assert!(!format!("{b:?}").contains(CANARY));
        let h = RedactorHandle::default();
        h.add("c", "k", CANARY.into());
        assert!(!format!("{h:?}").contains(CANARY));
        let mut s = StreamRedactor::new(h.current());
        let _ = s.push("canary-5f3b");
        assert!(!format!("{s:?}").contains("canary-5f3b"));
    }
}
