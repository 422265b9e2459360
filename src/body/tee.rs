//! [`Tee`]: a body that shows its frames to a [`TeeSink`] as they stream
//! through, unchanged, and tells it how the body ended. The sink decides
//! what to keep (the call log keeps a bounded prefix); the body itself
//! buffers nothing, so a streamed answer is never held back or collected.
//!
//! Two sinks use it: the call log (a bounded prefix of each body) and the
//! response cache (a copy of the answer, stored once complete).

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::body::{Body, BodyError};

/// How a teed body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeeEnd {
    /// Every frame passed.
    Complete,
    /// The body failed (the sender broke off, a limit cut it).
    Failed,
    /// The reader dropped it before the end (the caller left, or nobody
    /// read it: a request refused before its body was forwarded).
    Abandoned,
}

/// What a [`Tee`] reports to.
pub trait TeeSink: Send + Unpin + 'static {
    /// A data frame passed through.
    fn data(&mut self, data: &[u8]);
    /// A trailers frame passed through.
    fn trailers(&mut self) {}
    /// The body ended; called once.
    fn end(self, how: TeeEnd);
}

/// A body whose frames pass unchanged while `sink` sees them.
pub struct Tee<S: TeeSink> {
    inner: Body,
    sink: Option<S>,
}

impl<S: TeeSink> Tee<S> {
    /// Passes `inner` through, showing each frame and the end to `sink`.
    pub fn new(inner: Body, sink: S) -> Tee<S> {
        Tee {
            inner,
            sink: Some(sink),
        }
    }

    fn end(&mut self, how: TeeEnd) {
        if let Some(sink) = self.sink.take() {
            sink.end(how);
        }
    }
}

impl<S: TeeSink> HttpBody for Tee<S> {
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
                if let Some(sink) = this.sink.as_mut() {
                    match frame.data_ref() {
                        Some(data) => sink.data(data),
                        None => sink.trailers(),
                    }
                }
                // A body of known length is not polled past its last frame.
                if this.inner.is_end_stream() {
                    this.end(TeeEnd::Complete);
                }
            }
            Poll::Ready(None) => this.end(TeeEnd::Complete),
            Poll::Ready(Some(Err(_))) => this.end(TeeEnd::Failed),
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

impl<S: TeeSink> Drop for Tee<S> {
    fn drop(&mut self) {
        // An empty body may never be polled: it is complete all the same.
        let how = if self.inner.is_end_stream() {
            TeeEnd::Complete
        } else {
            TeeEnd::Abandoned
        };
        self.end(how);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use parking_lot::Mutex;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<(Vec<u8>, Option<TeeEnd>)>>);

    impl TeeSink for Seen {
        fn data(&mut self, data: &[u8]) {
            self.0.lock().0.extend_from_slice(data);
        }
        fn end(self, how: TeeEnd) {
            self.0.lock().1 = Some(how);
        }
    }

    #[tokio::test]
    async fn frames_pass_unchanged_and_the_sink_sees_them_and_the_end() {
        let seen = Seen::default();
        let body = Tee::new(crate::body::full("hello"), seen.clone());
        assert_eq!(body.size_hint().exact(), Some(5));
        let out = body.collect().await.expect("body").to_bytes();
        assert_eq!(out, "hello");
        let got = seen.0.lock().clone();
        assert_eq!(got, (b"hello".to_vec(), Some(TeeEnd::Complete)));
    }

    #[tokio::test]
    async fn a_body_dropped_unread_is_abandoned_and_an_empty_one_complete() {
        let seen = Seen::default();
        drop(Tee::new(crate::body::full("unread"), seen.clone()));
        assert_eq!(seen.0.lock().1, Some(TeeEnd::Abandoned));
        let empty = Seen::default();
        drop(Tee::new(crate::body::empty(), empty.clone()));
        assert_eq!(empty.0.lock().1, Some(TeeEnd::Complete));
    }
}
