//! [`Redactor`]: scrubs secret values (and their common encodings) out of text.
//!
//! - `mod.rs`: the redactor, its builder and the span engine (find every hit, redact
//!   the union of overlapping hits).
//! - `prefilter.rs`: the q-gram filter that keeps the automata off most of the text.
//! - `wrapped.rs`: base64 wrapped across `\n` / `\r\n` line breaks.
//! - `detect.rs`: the pattern layer (`rules/patterns.toml`).
//! - `stream.rs`: [`StreamRedactor`], [`RedactingWriter`], [`RedactingMakeWriter`].
//! - `handle.rs`: [`RedactorHandle`], the live view of handed-out values.
//! - `json.rs`: redaction of a `serde_json::Value` in place.

mod detect;
mod handle;
mod json;
mod prefilter;
mod stream;
mod wrapped;

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickKind, Anchored, Input, MatchKind, StartKind};
use hive_cred_core::{Error, ErrorKind, ExposeSecret, Result, SecretString};
use zeroize::Zeroizing;

use crate::encoding::{self, PatternKind};
use detect::Detector;
use prefilter::Prefilter;

pub use handle::{OVERLAY_MAX_VALUES, RETAINED_VALUES, RedactorHandle};
pub use stream::{RedactingMakeWriter, RedactingWriter, StreamRedactor};

/// The default shortest secret value that is redacted, in bytes.
pub const DEFAULT_MIN_SECRET_LEN: usize = 6;

/// The shortest aligned-base64 fragment matched (shorter fragments would match by
/// chance in ordinary base64 data).
const MIN_ALIGNED_FRAGMENT: usize = 8;

/// Secrets at least this long also have their leading and trailing runs redacted.
const PARTIAL_MIN_SECRET: usize = 24;
/// The shortest leading or trailing run redacted (or half the secret, if longer).
const PARTIAL_MIN_RUN: usize = 12;

/// The marker that replaces a secret: `[hive:<id>.<key>]`.
pub fn marker(id: &str, key: &str) -> String {
    format!("[hive:{id}.{key}]")
}

/// The marker that replaces a leading or trailing run of a secret: `[hive:<id>.<key>:partial]`.
fn partial_marker(id: &str, key: &str) -> String {
    format!("[hive:{id}.{key}:partial]")
}

/// The marker of a pattern-layer match: `[hive:detected.<rule>]`.
fn detected_marker(rule: &str) -> String {
    format!("[hive:detected.{rule}]")
}

/// One match: `hay[start..end]` is replaced, by marker `marker`.
#[derive(Debug, Clone, Copy)]
struct Hit {
    start: usize,
    end: usize,
    marker: u32,
}

/// What a literal pattern stands for.
#[derive(Clone, Copy)]
enum PatternRole {
    /// A whole secret in some encoding; marker `2 * label`.
    Whole,
    /// The first `n` bytes of secret `secret`, extended to the right while the text
    /// goes on to agree with it; marker `2 * label + 1`.
    Prefix { secret: u32, n: u32 },
    /// The last `n` bytes of secret `secret`, extended to the left likewise.
    Suffix { secret: u32, n: u32 },
}

#[derive(Clone, Copy)]
struct PatternInfo {
    label: u32,
    role: PatternRole,
}

/// Replaces secret values in text with `[hive:<id>.<key>]` markers.
///
/// Each secret is matched raw and in every common [`Encoding`](crate::Encoding):
/// base64 and base64url (padded, unpadded, inside longer encoded blobs at any alignment,
/// and wrapped at any width with `\n` or `\r\n`), URL-encoded the ways real encoders do
/// it (`%xx` in any case, `+` or `%20` for space, `/` kept or escaped), JSON-escaped
/// (`\/`, `\u00e9` / `\u00E9`, Go's and Gson's HTML-safe escapes) and hex in any case.
/// Secrets of at least 24 bytes also lose any leading or trailing run of at least
/// max(12, half their length) bytes, as tools print truncated tokens
/// (`ghp_abc123def456...`); that run becomes `[hive:<id>.<key>:partial]`.
///
/// With [`detect_patterns`](RedactorBuilder::detect_patterns) on, well-known token
/// formats (see the crate README) are replaced by `[hive:detected.<rule>]` even if the
/// value was never registered.
///
/// # Behavior
/// - Text without any match comes back unchanged (and borrowed: no copy).
/// - The union of all matched spans is replaced: overlapping secrets (`AAAA-1111-XYZW`
///   and `XYZW-2222-BBBB` in `AAAA-1111-XYZW-2222-BBBB`) leave nothing behind. A merged
///   span gets the markers of every secret in it, in order; a detected-rule marker is
///   dropped where a registered secret covers the same text.
/// - Values shorter than [`min_secret_len`](RedactorBuilder::min_secret_len) (default
///   [`DEFAULT_MIN_SECRET_LEN`]) are not redacted: masking every `abc` in a text would
///   make it unreadable and reveal the value by its pattern.
/// - The automata keep the patterns in memory for as long as the redactor lives.
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
    /// One layer, or (after a refresh, see [`RedactorHandle`]) a shared base layer and a
    /// small overlay with the values added since the base was built.
    layers: Vec<Arc<Layer>>,
    detector: Option<Arc<Detector>>,
    secrets: usize,
    patterns: usize,
    max_pattern_len: usize,
    holdback: usize,
}

/// Marker ids: `layer << 24 | local`; local `2l` / `2l + 1` are label `l`'s whole and
/// partial markers; layer [`DETECTED`] holds the pattern rules, local = rule index.
const LAYER_SHIFT: u32 = 24;
const DETECTED: u32 = 0xFF;

fn is_detected(m: u32) -> bool {
    m >> LAYER_SHIFT == DETECTED
}

fn is_partial(m: u32) -> bool {
    !is_detected(m) && m % 2 == 1
}

/// The automata over one set of secrets.
struct Layer {
    /// Exact patterns: raw, JSON, base64 forms, and the partial runs.
    exact: Option<AhoCorasick>,
    exact_info: Vec<PatternInfo>,
    /// ASCII case-insensitive patterns: hex and `%xx` forms.
    folded: Option<AhoCorasick>,
    folded_info: Vec<PatternInfo>,
    /// The base64 forms again, searched in line-wrapped regions with breaks removed.
    wrapped: Option<AhoCorasick>,
    wrapped_info: Vec<PatternInfo>,
    /// Candidate start positions; `None` when some pattern is too short for it.
    prefilter: Option<Prefilter>,
    /// Secret values that have partial patterns, for extending those matches.
    partials: Vec<Zeroizing<Vec<u8>>>,
    /// Marker `2l` (whole) and `2l + 1` (partial) of label `l`.
    markers: Vec<Arc<str>>,
    secrets: usize,
    patterns: usize,
    max_pattern_len: usize,
    max_base64_len: usize,
    min_base64_len: usize,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets)
            .field("patterns", &self.patterns)
            .field("layers", &self.layers.len())
            .field("detect_patterns", &self.detector.is_some())
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
    detect_patterns: bool,
}

impl fmt::Debug for RedactorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactorBuilder")
            .field("secrets", &self.secrets.len())
            .field("min_secret_len", &self.min_secret_len)
            .field("detect_patterns", &self.detect_patterns)
            .finish_non_exhaustive()
    }
}

impl Default for RedactorBuilder {
    fn default() -> Self {
        RedactorBuilder {
            secrets: Vec::new(),
            min_secret_len: DEFAULT_MIN_SECRET_LEN,
            detect_patterns: false,
        }
    }
}

/// The compiled rules, shared by every redactor (compiling them takes milliseconds).
/// The pattern layer when `on` (compiled once per process).
fn detector(on: bool) -> Result<Option<Arc<Detector>>> {
    on.then(shared_detector).transpose()
}

fn shared_detector() -> Result<Arc<Detector>> {
    static DETECTOR: OnceLock<std::result::Result<Arc<Detector>, Error>> = OnceLock::new();
    DETECTOR
        .get_or_init(|| Detector::from_rules_file().map(Arc::new))
        .clone()
}

fn build_automaton(
    patterns: &[&[u8]],
    case_free: bool,
    anchored: bool,
) -> Result<Option<AhoCorasick>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .ascii_case_insensitive(case_free)
        .start_kind(if anchored {
            StartKind::Both
        } else {
            StartKind::Unanchored
        })
        // Large sets: a DFA takes too long to build for the refresh budget (5 ms).
        .kind((patterns.len() > 2_000).then_some(AhoCorasickKind::ContiguousNFA))
        .build(patterns)
        .map(Some)
        .map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("could not build the redaction automaton: {e}"),
            )
            .with_context("patterns", patterns.len())
        })
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

    /// Also replace well-known token formats (the rules in the crate README) by
    /// `[hive:detected.<rule>]`, whether or not the value was registered.
    ///
    /// # Default
    /// `false` here; a [`RedactorHandle`] (what the runtime uses for tool output going
    /// to the model) turns it on.
    pub fn detect_patterns(mut self, on: bool) -> Self {
        self.detect_patterns = on;
        self
    }

    /// Builds the automata. Fails only if an automaton would exceed the library's
    /// size limits (millions of patterns).
    pub fn build(self) -> Result<Redactor> {
        let detector = detector(self.detect_patterns)?;
        let layer = build_layer(self.secrets, self.min_secret_len)?;
        Ok(Redactor::from_parts(layer.into_iter().collect(), detector))
    }
}

/// Builds the automata over `secrets`; `None` when no value is long enough.
fn build_layer(
    mut secrets: Vec<(String, String, SecretString)>,
    min_secret_len: usize,
) -> Result<Option<Arc<Layer>>> {
    // Deterministic: the first (id, key) in order wins a value shared by several keys.
    secrets.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
    let mut markers: Vec<Arc<str>> = Vec::new();
    let mut partials: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    // (pattern, kind, info); deduplicated below, first insertion wins.
    let mut entries: Vec<(Zeroizing<Vec<u8>>, PatternKind, PatternInfo)> = Vec::new();
    let mut count = 0;
    let min_inner = MIN_ALIGNED_FRAGMENT.max(min_secret_len);
    let mut last_label: Option<(&str, &str)> = None;
    for (id, key, value) in &secrets {
        // EXPOSE: the redactor must know the value to find it in text.
        let raw = value.expose_secret();
        if raw.len() < min_secret_len {
            tracing::debug!(
                target: "hive_cred::redact",
                id = id.as_str(),
                key = key.as_str(),
                "value shorter than min_secret_len is not redacted"
            );
            continue;
        }
        count += 1;
        if last_label != Some((id.as_str(), key.as_str())) {
            markers.push(marker(id, key).into());
            markers.push(partial_marker(id, key).into());
            last_label = Some((id.as_str(), key.as_str()));
        }
        let label = (markers.len() / 2 - 1) as u32;
        let whole = PatternInfo {
            label,
            role: PatternRole::Whole,
        };
        for p in encoding::patterns(raw, min_inner) {
            entries.push((p.bytes, p.kind, whole));
        }
        if raw.len() >= PARTIAL_MIN_SECRET {
            let bytes = raw.as_bytes();
            let mut n = PARTIAL_MIN_RUN.max(raw.len().div_ceil(2));
            while !raw.is_char_boundary(n) {
                n += 1;
            }
            let mut m = PARTIAL_MIN_RUN.max(raw.len().div_ceil(2));
            while !raw.is_char_boundary(raw.len() - m) {
                m += 1;
            }
            let secret = partials.len() as u32;
            partials.push(Zeroizing::new(bytes.to_vec()));
            let prefix = PatternRole::Prefix {
                secret,
                n: n as u32,
            };
            let suffix = PatternRole::Suffix {
                secret,
                n: m as u32,
            };
            for (bytes, role) in [(&bytes[..n], prefix), (&bytes[bytes.len() - m..], suffix)] {
                if bytes.len() < raw.len() {
                    let info = PatternInfo { label, role };
                    entries.push((Zeroizing::new(bytes.to_vec()), PatternKind::Exact, info));
                }
            }
        }
    }
    // Stable: among equal patterns the first inserted (a whole form, the first
    // secret in order) wins.
    entries.sort_by(|a, b| a.0.as_slice().cmp(b.0.as_slice()));
    entries.dedup_by(|later, first| later.0.as_slice() == first.0.as_slice());
    if entries.is_empty() {
        return Ok(None);
    }
    let mut exact: Vec<&[u8]> = Vec::new();
    let mut exact_info = Vec::new();
    let mut folded: Vec<&[u8]> = Vec::new();
    let mut folded_info = Vec::new();
    let mut wrapped: Vec<&[u8]> = Vec::new();
    let mut wrapped_info = Vec::new();
    let mut max_pattern_len = 0;
    let mut max_base64_len = 0;
    let mut min_base64_len = usize::MAX;
    for (p, kind, info) in &entries {
        max_pattern_len = max_pattern_len.max(p.len());
        match kind {
            PatternKind::Exact => {
                exact.push(p.as_slice());
                exact_info.push(*info);
            }
            PatternKind::CaseFree => {
                folded.push(p.as_slice());
                folded_info.push(*info);
            }
            PatternKind::Base64 => {
                exact.push(p.as_slice());
                exact_info.push(*info);
                wrapped.push(p.as_slice());
                wrapped_info.push(*info);
                max_base64_len = max_base64_len.max(p.len());
                min_base64_len = min_base64_len.min(p.len());
            }
        }
    }
    let prefilter = Prefilter::new(entries.iter().map(|e| &e.0));
    let anchored = prefilter.is_some();
    Ok(Some(Arc::new(Layer {
        exact: build_automaton(&exact, false, anchored)?,
        folded: build_automaton(&folded, true, anchored)?,
        wrapped: build_automaton(&wrapped, false, anchored)?,
        exact_info,
        folded_info,
        wrapped_info,
        prefilter,
        partials,
        markers,
        secrets: count,
        patterns: entries.len(),
        max_pattern_len,
        max_base64_len,
        min_base64_len,
    })))
}

impl Redactor {
    /// A builder.
    pub fn builder() -> RedactorBuilder {
        RedactorBuilder::default()
    }

    /// A redactor that knows no secrets.
    pub fn empty() -> Self {
        Redactor::from_parts(Vec::new(), None)
    }

    fn from_parts(layers: Vec<Arc<Layer>>, detector: Option<Arc<Detector>>) -> Self {
        let max_pattern_len = layers.iter().map(|l| l.max_pattern_len).max().unwrap_or(0);
        let max_base64_len = layers.iter().map(|l| l.max_base64_len).max().unwrap_or(0);
        // A hit of a literal pattern is complete `max_pattern_len` bytes after its start,
        // and a suffix run reaches as far back: hold back twice that. A wrapped base64
        // form with a `\r\n` after every character is at most three times as long. A
        // rule match needs one byte after it for `\b`.
        let holdback = (2 * max_pattern_len)
            .max(3 * max_base64_len)
            .max(detector.as_ref().map_or(0, |d| d.max_len() + 1));
        Redactor {
            secrets: layers.iter().map(|l| l.secrets).sum(),
            patterns: layers.iter().map(|l| l.patterns).sum(),
            max_pattern_len,
            holdback,
            layers,
            detector,
        }
    }

    /// This redactor's base layer plus one over `secrets` (what a [`RedactorHandle`]
    /// builds after a refresh instead of rebuilding every secret).
    fn with_overlay(
        base: Arc<Layer>,
        secrets: Vec<(String, String, SecretString)>,
        min_secret_len: usize,
        detector: Option<Arc<Detector>>,
    ) -> Result<Redactor> {
        let mut layers = vec![base];
        layers.extend(build_layer(secrets, min_secret_len)?);
        Ok(Redactor::from_parts(layers, detector))
    }

    /// How many secret values it redacts.
    pub fn secret_count(&self) -> usize {
        self.secrets
    }

    /// How many literal patterns (secrets times distinct encodings, plus partial runs)
    /// the automata hold.
    pub fn pattern_count(&self) -> usize {
        self.patterns
    }

    /// The longest literal pattern, in bytes.
    pub fn max_pattern_len(&self) -> usize {
        self.max_pattern_len
    }

    /// How many bytes a [`StreamRedactor`] holds back (at most) before it can decide
    /// them.
    pub fn holdback_len(&self) -> usize {
        self.holdback
    }

    /// Whether the pattern layer is on.
    pub fn detects_patterns(&self) -> bool {
        self.detector.is_some()
    }

    /// Heap bytes held by the automata and the prefilter (not counting the compiled
    /// pattern rules, which are shared by every redactor).
    pub fn memory_usage(&self) -> usize {
        self.layers
            .iter()
            .map(|i| {
                [&i.exact, &i.folded, &i.wrapped]
                    .into_iter()
                    .flatten()
                    .map(AhoCorasick::memory_usage)
                    .sum::<usize>()
                    + i.prefilter.as_ref().map_or(0, Prefilter::memory_usage)
                    + i.partials.iter().map(|p| p.len()).sum::<usize>()
            })
            .sum()
    }

    /// Whether `text` contains any known secret (or, with the pattern layer, any
    /// detected token) in any supported encoding.
    pub fn contains_secret(&self, text: impl AsRef<[u8]>) -> bool {
        let mut hits = Vec::new();
        self.hits(text.as_ref(), 0, &mut hits);
        !hits.is_empty()
    }

    /// Replaces every secret in `text` with its marker. Borrows when nothing matched.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match self.redact_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Hits start and end on character boundaries (patterns are whole UTF-8
            // strings or ASCII, partial runs are cut on the secret's boundaries) and
            // markers are ASCII: the output is valid UTF-8.
            Cow::Owned(bytes) => Cow::Owned(into_string(bytes)),
        }
    }

    /// Replaces every secret in `bytes` with its marker. Borrows when nothing matched.
    pub fn redact_bytes<'t>(&self, bytes: &'t [u8]) -> Cow<'t, [u8]> {
        let mut hits = Vec::new();
        self.hits(bytes, 0, &mut hits);
        if hits.is_empty() {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len());
        self.emit(bytes, 0, None, &mut hits, &mut out);
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

    /// A streaming redactor over this one (fixed: it does not follow refreshes; use
    /// [`RedactorHandle::stream`] for that).
    pub fn stream(self: &Arc<Self>) -> StreamRedactor {
        StreamRedactor::new(self.clone())
    }

    /// Appends every hit starting at or after `from` (bytes before are context).
    fn hits(&self, hay: &[u8], from: usize, out: &mut Vec<Hit>) {
        for (n, layer) in self.layers.iter().enumerate() {
            let tag = (n as u32) << LAYER_SHIFT;
            layer.literal_hits(hay, from, tag, out);
            if let Some(ac) = &layer.wrapped {
                let pf = layer.prefilter.as_ref();
                let min = layer.min_base64_len;
                wrapped::hits(ac, pf, min, hay, from, &mut |start, end, pattern| {
                    out.push(layer.hit_for(&layer.wrapped_info, pattern, start, end, tag));
                });
            }
        }
        if let Some(d) = &self.detector {
            d.hits(hay, from, DETECTED << LAYER_SHIFT, out);
        }
    }

    fn marker_text(&self, m: u32) -> Cow<'_, str> {
        let (layer, local) = (m >> LAYER_SHIFT, (m & ((1 << LAYER_SHIFT) - 1)) as usize);
        if layer == DETECTED {
            let name = self
                .detector
                .as_ref()
                .map_or("unknown", |d| d.names()[local].as_str());
            Cow::Owned(detected_marker(name))
        } else {
            Cow::Borrowed(&self.layers[layer as usize].markers[local])
        }
    }

    /// Writes `hay[from..]` with the union of `hits` replaced into `out`, up to `limit`
    /// (or the end). A merged span that starts before `limit` but reaches past it is not
    /// written: the returned position, where writing stopped, is its start.
    fn emit(
        &self,
        hay: &[u8],
        from: usize,
        limit: Option<usize>,
        hits: &mut [Hit],
        out: &mut Vec<u8>,
    ) -> usize {
        hits.sort_unstable_by_key(|h| (h.start, h.end));
        let mut pos = from;
        let mut i = 0;
        while i < hits.len() {
            let start = hits[i].start;
            let mut end = hits[i].end;
            let mut j = i + 1;
            while j < hits.len() && hits[j].start < end {
                end = end.max(hits[j].end);
                j += 1;
            }
            if let Some(limit) = limit {
                if start >= limit {
                    break;
                }
                if end > limit {
                    out.extend_from_slice(&hay[pos..start]);
                    return start;
                }
            }
            out.extend_from_slice(&hay[pos..start]);
            self.write_markers(&hits[i..j], out);
            pos = end;
            i = j;
        }
        let end = limit.map_or(hay.len(), |l| l.max(pos));
        out.extend_from_slice(&hay[pos..end]);
        end
    }

    /// The markers of one merged span: each distinct one in order; a partial marker
    /// only without the whole one of the same secret and when no whole secret covers
    /// its run; a detected one only without any registered secret and only the first
    /// rule (in file order) of those that overlap.
    fn write_markers(&self, hits: &[Hit], out: &mut Vec<u8>) {
        let any_secret = hits.iter().any(|h| !is_detected(h.marker));
        let mut written: Vec<Cow<'_, str>> = Vec::with_capacity(hits.len());
        for h in hits {
            let m = h.marker;
            let skip = (is_detected(m)
                && (any_secret
                    || hits
                        .iter()
                        .any(|o| is_detected(o.marker) && o.marker < m)))
                || (is_partial(m) && hits.iter().any(|o| o.marker == m - 1))
                // A partial run inside a whole secret's span shows nothing more.
                || (is_partial(m)
                    && hits.iter().any(|o| {
                        !is_detected(o.marker)
                            && !is_partial(o.marker)
                            && o.start <= h.start
                            && h.end <= o.end
                    }));
            if skip {
                continue;
            }
            let text = self.marker_text(m);
            if !written.contains(&text) {
                out.extend_from_slice(text.as_bytes());
                written.push(text);
            }
        }
    }
}

impl Layer {
    fn hit_for(
        &self,
        info: &[PatternInfo],
        pattern: usize,
        start: usize,
        end: usize,
        tag: u32,
    ) -> Hit {
        Hit {
            start,
            end,
            marker: marker_id(tag, info[pattern]),
        }
    }

    fn literal_hits(&self, hay: &[u8], from: usize, tag: u32, out: &mut Vec<Hit>) {
        if self.exact.is_none() && self.folded.is_none() {
            return;
        }
        match &self.prefilter {
            Some(pf) => {
                // Every match contains, at some grid position g (every `stride` bytes
                // from `from`), a q-gram the filter knows at offset g - s < stride of
                // its start s. At each grid hit, the starts (g - stride, g] are tried
                // with anchored searches.
                let mut g = from + pf.stride - 1;
                while g + pf.q <= hay.len() {
                    if pf.hit(hay, g) {
                        pf.starts(hay, g, from, |s| self.longest_at(hay, from, s, tag, out));
                    }
                    g += pf.stride;
                }
            }
            None => {
                // Some pattern is shorter than the filter's q-grams: let the automata
                // find each next start.
                let mut pos = from;
                while pos < hay.len() {
                    let next = [&self.exact, &self.folded]
                        .into_iter()
                        .flatten()
                        .filter_map(|ac| ac.find(Input::new(hay).range(pos..)))
                        .map(|m| m.start())
                        .min();
                    let Some(s) = next else { break };
                    self.longest_at(hay, from, s, tag, out);
                    pos = s + 1;
                }
            }
        }
    }

    /// The longest literal match starting at `s`, if any, with partial runs extended.
    fn longest_at(&self, hay: &[u8], from: usize, s: usize, tag: u32, out: &mut Vec<Hit>) {
        let mut best: Option<(usize, PatternInfo)> = None;
        for (ac, info) in [
            (&self.exact, &self.exact_info),
            (&self.folded, &self.folded_info),
        ] {
            let Some(ac) = ac else { continue };
            let input = Input::new(hay).range(s..).anchored(Anchored::Yes);
            // Unanchored-only automata (no prefilter) fall back to an unanchored
            // search, which finds the same match when one starts at `s`.
            let found = match ac.try_find(input) {
                Ok(m) => m,
                Err(_) => ac
                    .find(Input::new(hay).range(s..))
                    .filter(|m| m.start() == s),
            };
            if let Some(m) = found
                && best.is_none_or(|(end, _)| m.end() > end)
            {
                best = Some((m.end(), info[m.pattern().as_usize()]));
            }
        }
        let Some((mut end, info)) = best else { return };
        let mut start = s;
        match info.role {
            PatternRole::Whole => {}
            PatternRole::Prefix { secret, n } => {
                let secret = &self.partials[secret as usize];
                let mut i = n as usize;
                while i < secret.len() && end < hay.len() && hay[end] == secret[i] {
                    i += 1;
                    end += 1;
                }
                // Stop on a character boundary of the secret (and so of the text).
                while i > n as usize && i < secret.len() && secret[i] & 0xC0 == 0x80 {
                    i -= 1;
                    end -= 1;
                }
            }
            PatternRole::Suffix { secret, n } => {
                let secret = &self.partials[secret as usize];
                let first = secret.len() - n as usize;
                let mut i = first;
                while i > 0 && start > from && hay[start - 1] == secret[i - 1] {
                    i -= 1;
                    start -= 1;
                }
                while i < first && secret[i] & 0xC0 == 0x80 {
                    i += 1;
                    start += 1;
                }
            }
        }
        out.push(Hit {
            start,
            end,
            marker: marker_id(tag, info),
        });
    }
}

/// The marker of a hit on a pattern: its label's whole or partial marker, in layer `tag`.
fn marker_id(tag: u32, info: PatternInfo) -> u32 {
    let partial = u32::from(!matches!(info.role, PatternRole::Whole));
    tag | (2 * info.label + partial)
}

fn into_string(bytes: Vec<u8>) -> String {
    // Input was UTF-8 and cuts are on character boundaries (see `Redactor::redact`).
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests;
