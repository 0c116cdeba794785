//! Redaction of streams: [`StreamRedactor`], [`RedactingWriter`], [`RedactingMakeWriter`].

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::{Redactor, RedactorHandle, into_string};

/// Bytes of already-written input kept in front of the pending text, as look-behind
/// context for the pattern layer's `\b` (one UTF-8 character).
const CONTEXT: usize = 4;

/// Where a stream gets its redactor from.
#[derive(Clone)]
enum Source {
    Fixed(Arc<Redactor>),
    Live(RedactorHandle),
}

impl Source {
    fn current(&self) -> Arc<Redactor> {
        match self {
            Source::Fixed(r) => r.clone(),
            Source::Live(h) => h.current(),
        }
    }
}

/// Redacts a stream of chunks, catching secrets split across chunk boundaries.
///
/// Holds back the last [`Redactor::holdback_len`] bytes of input (plus at most 3 to
/// keep UTF-8 characters whole) until more input or [`finish`](Self::finish) decides
/// them, and emits nothing until twice that much is pending (so small chunks are not
/// each rescanned with the whole hold-back). The concatenated output equals [`Redactor::redact`] of the concatenated input
/// as long as the redactor does not change.
///
/// A stream made from a [`RedactorHandle`] ([`RedactorHandle::stream`]) asks it for the
/// current redactor on every chunk, so a value refreshed while the stream is open is
/// redacted from the next chunk on, including in text held back before the refresh.
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
    source: Source,
    /// `pending[..context]` was written already (look-behind only); the rest is undecided.
    pending: Zeroizing<Vec<u8>>,
    context: usize,
    hits: Vec<super::Hit>,
}

impl fmt::Debug for StreamRedactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRedactor")
            .field("live", &matches!(self.source, Source::Live(_)))
            .field("pending_len", &self.pending_len())
            .finish_non_exhaustive()
    }
}

impl StreamRedactor {
    /// A stream over a fixed `redactor` (it does not follow refreshes).
    pub fn new(redactor: Arc<Redactor>) -> Self {
        Self::from_source(Source::Fixed(redactor))
    }

    /// A stream that follows `handle`: every chunk is redacted with its current redactor.
    pub fn with_handle(handle: RedactorHandle) -> Self {
        Self::from_source(Source::Live(handle))
    }

    fn from_source(source: Source) -> Self {
        StreamRedactor {
            source,
            pending: Zeroizing::new(Vec::new()),
            context: 0,
            hits: Vec::new(),
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
        let redactor = self.source.current();
        extend_zeroizing(&mut self.pending, chunk);
        let len = self.pending.len();
        // Each scan covers the held-back bytes again: wait for twice the hold-back, so
        // that small chunks (a model's token stream) cost a scan per hold-back's worth of
        // output, not one per chunk.
        if len - self.context < 2 * redactor.holdback_len() {
            return Vec::new();
        }
        let mut limit = len
            .saturating_sub(redactor.holdback_len())
            .max(self.context);
        if utf8 {
            // Never cut inside a character: continuation bytes are 0b10xx_xxxx.
            while limit > self.context && limit < len && self.pending[limit] & 0xC0 == 0x80 {
                limit -= 1;
            }
        }
        if limit == self.context {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(limit - self.context);
        self.hits.clear();
        redactor.hits(&self.pending, self.context, &mut self.hits);
        let done = redactor.emit(
            &self.pending,
            self.context,
            Some(limit),
            &mut self.hits,
            &mut out,
        );
        let mut keep = done.saturating_sub(CONTEXT);
        while keep > 0 && self.pending[keep] & 0xC0 == 0x80 {
            keep -= 1;
        }
        self.pending.drain(..keep);
        self.context = done - keep;
        out
    }

    /// How many undecided bytes are held back.
    pub fn pending_len(&self) -> usize {
        self.pending.len() - self.context
    }

    /// Ends the stream; returns the redacted held-back text.
    pub fn finish(mut self) -> String {
        into_string(self.finish_bytes_inner())
    }

    /// Ends the stream; returns the redacted held-back bytes.
    pub fn finish_bytes(mut self) -> Vec<u8> {
        self.finish_bytes_inner()
    }

    /// Writes out everything held back; the stream can go on afterwards (a secret split
    /// across this point is not caught).
    pub(super) fn finish_bytes_inner(&mut self) -> Vec<u8> {
        let redactor = self.source.current();
        let mut out = Vec::with_capacity(self.pending_len());
        self.hits.clear();
        redactor.hits(&self.pending, self.context, &mut self.hits);
        redactor.emit(&self.pending, self.context, None, &mut self.hits, &mut out);
        self.pending.clear();
        self.context = 0;
        out
    }
}

/// Appends `chunk`, moving to a larger buffer by hand so that the old one is wiped
/// (a plain `extend` frees it with the held-back text still in it).
fn extend_zeroizing(buf: &mut Zeroizing<Vec<u8>>, chunk: &[u8]) {
    let needed = buf.len() + chunk.len();
    if needed > buf.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(needed.max(2 * buf.capacity())));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(chunk);
}

/// An [`std::io::Write`] that redacts everything written through it.
///
/// A secret split across two `write` calls is caught. [`flush`](std::io::Write::flush)
/// and drop write out the held-back tail, so a secret split across a flush is not.
/// Made with [`with_handle`](Self::with_handle), it follows refreshes like
/// [`StreamRedactor::with_handle`].
#[derive(Debug)]
pub struct RedactingWriter<W: std::io::Write> {
    inner: W,
    stream: StreamRedactor,
}

impl<W: std::io::Write> RedactingWriter<W> {
    /// Wraps `inner`, redacting with a fixed `redactor`.
    pub fn new(inner: W, redactor: Arc<Redactor>) -> Self {
        RedactingWriter {
            inner,
            stream: StreamRedactor::new(redactor),
        }
    }

    /// Wraps `inner`, redacting with the current redactor of `handle` on every write.
    pub fn with_handle(inner: W, handle: RedactorHandle) -> Self {
        RedactingWriter {
            inner,
            stream: StreamRedactor::with_handle(handle),
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

/// A [`tracing_subscriber::fmt::MakeWriter`] that redacts log output with the current
/// redactor of a [`RedactorHandle`] (its writers follow refreshes).
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
        RedactingWriter::with_handle(self.make.make_writer(), self.handle.clone())
    }
}
