//! The copy of an answer on its way to the caller (through a
//! [`crate::body::tee::Tee`]), stored once complete if it fits.

use bytes::Bytes;
use http::header::HeaderMap;
use http::StatusCode;
use std::sync::Arc;

use super::{key::*, store::*};
use crate::body::tee::{TeeEnd, TeeSink};

/// A miss's body on its way to the caller is a [`Tee`] into this: frames
/// pass through unchanged and are copied into the capture until the body
/// completes (then the entry is stored) or grows past what may be stored,
/// carries trailers, fails or is left unread (then the copy is dropped,
/// and its budget given back at once).
pub(super) struct CopyAside(pub(super) Option<Capture>);

impl TeeSink for CopyAside {
    fn data(&mut self, data: &[u8]) {
        if let Some(capture) = &mut self.0 {
            if !capture.push(data) {
                self.0 = None;
            }
        }
    }

    /// Trailers cannot be stored with the entry.
    fn trailers(&mut self) {
        self.0 = None;
    }

    fn end(self, how: TeeEnd) {
        if let (TeeEnd::Complete, Some(capture)) = (how, self.0) {
            capture.finish();
        }
    }
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
