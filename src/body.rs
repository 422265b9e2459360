//! The one body type that flows through the gateway's services, and the
//! request-body guard that enforces `limits.max_body` while streaming.

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Any error a body can raise on its way through the gateway.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error of a [`Body`]. A concrete type rather than a bare
/// `Box<dyn Error>`: a trait object in the body type makes the compiler
/// fail to prove the request futures `Send` through hyper's generic bounds.
#[derive(Debug)]
pub struct BodyError(BoxError);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl BodyError {
    pub fn new(err: impl Into<BoxError>) -> Self {
        BodyError(err.into())
    }
}

/// Request and response bodies inside the gateway: streamed, type-erased once.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Wraps any body (hyper's `Incoming`, a test body) into [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(BodyError::new).boxed_unsync()
}

/// Raised by [`LimitedBody`] when a streamed body passes `max_body`; the
/// proxy finds it in the upstream error's source chain and answers 413.
#[derive(Debug, thiserror::Error)]
#[error("request body is larger than {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

pin_project_lite::pin_project! {
    /// Counts the bytes of a streamed body and fails it once they pass the
    /// limit, so a chunked upload cannot exceed `max_body` either.
    pub struct LimitedBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        limit: u64,
    }
}

impl<B> LimitedBody<B> {
    pub fn new(inner: B, limit: u64) -> Self {
        LimitedBody {
            inner,
            remaining: limit,
            limit,
        }
    }
}

impl<B> HttpBody for LimitedBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        *this.remaining = 0;
                        return Poll::Ready(Some(Err(BodyError::new(BodyTooLarge {
                            limit: *this.limit,
                        }))));
                    }
                    *this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// True when `err` or anything in its source chain is a [`BodyTooLarge`].
pub fn is_body_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<BodyTooLarge>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body_util::StreamBody;

    #[tokio::test]
    async fn limited_body_passes_exactly_the_limit_and_fails_one_byte_over() {
        let chunks = || {
            stream::iter(vec![
                Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"abcd"))),
                Ok(Frame::data(Bytes::from_static(b"ef"))),
            ])
        };
        let ok = LimitedBody::new(StreamBody::new(chunks()), 6)
            .collect()
            .await;
        assert_eq!(ok.expect("within limit").to_bytes(), "abcdef");

        let err = LimitedBody::new(StreamBody::new(chunks()), 5)
            .collect()
            .await
            .expect_err("over limit");
        assert!(is_body_too_large(&err));
    }
}
