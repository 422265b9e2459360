//! The body that streams an answer to the caller and copies it aside, to
//! be stored once complete if it fits.

use bytes::Bytes;
use http::header::HeaderMap;
use http::StatusCode;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{key::*, store::*};
use crate::body::{Body, BodyError};

/// A miss's body on its way to the caller: frames pass through unchanged
/// and are copied into `capture` until the body ends (then the entry is
/// stored) or grows past what may be stored (then the copy is dropped).
pub(super) struct Recording {
    pub(super) inner: Body,
    pub(super) capture: Option<Capture>,
}

pub(super) struct Capture {
    pub(super) store: Arc<CacheStore>,
    pub(super) key: Arc<CacheKey>,
    pub(super) entry: Entry,
    pub(super) buf: Vec<u8>,
    /// The declared length, to allocate once on the first frame.
    pub(super) expected: usize,
    /// Body bytes that still fit `max_entry_size`.
    pub(super) room: u64,
    /// Bytes of the store's copy budget this copy holds (what `buf` allocated).
    pub(super) reserved: u64,
}

impl Capture {
    /// Adds a frame's bytes; false when the copy must be abandoned. What
    /// the buffer allocates is taken from the store's budget first.
    pub(super) fn push(&mut self, data: &[u8]) -> bool {
        let n = data.len() as u64;
        if n > self.room {
            return false;
        }
        let needed = self.buf.len() + data.len();
        let capacity = self.buf.capacity();
        if needed > capacity {
            // The declared length at once, else doubling up to the limit.
            let limit = self.buf.len() + self.room as usize;
            let target = needed.max(self.expected).max((capacity * 2).min(limit));
            if !self.store.reserve((target - capacity) as u64) {
                return false;
            }
            self.reserved += (target - capacity) as u64;
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.room -= n;
        self.buf.extend_from_slice(data);
        true
    }

    pub(super) fn finish(mut self) {
        let mut entry = std::mem::replace(&mut self.entry, empty_entry());
        let mut buf = std::mem::take(&mut self.buf);
        // The entry is weighed by its length: hold no more than that.
        buf.shrink_to_fit();
        entry.body = Bytes::from(buf);
        entry.weight = entry.weight.saturating_add(entry.body.len() as u32);
        self.store.insert(self.key.clone(), entry);
    }
}

/// What `Capture::finish` leaves behind in the copy it consumes.
pub(super) fn empty_entry() -> Entry {
    Entry {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: Bytes::new(),
        stored_at: 0,
        initial_age: 0,
        lifetime: 0,
        weight: 0,
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.store.release(self.reserved);
    }
}

impl Recording {
    /// Stores the copy if the inner body has ended.
    pub(super) fn finish_if_ended(&mut self) {
        if self.inner.is_end_stream() {
            if let Some(capture) = self.capture.take() {
                capture.finish();
            }
        }
    }
}

impl HttpBody for Recording {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let keep = match (frame.data_ref(), &mut this.capture) {
                    (Some(data), Some(capture)) => capture.push(data),
                    // Trailers cannot be stored with the entry.
                    (None, Some(_)) => false,
                    (_, None) => true,
                };
                if !keep {
                    this.capture = None;
                }
                this.finish_if_ended();
            }
            Poll::Ready(None) => {
                if let Some(capture) = this.capture.take() {
                    capture.finish();
                }
            }
            // A body that fails is not the answer: nothing is stored.
            Poll::Ready(Some(Err(_))) => this.capture = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        // An empty body may never be polled; one the caller left early
        // has not ended, and is not stored.
        self.finish_if_ended();
    }
}
