//! The one body type that flows through the gateway's services, and the
//! body guards: [`LimitedBody`] enforces `limits.max_body` while a request
//! streams, [`IdleTimeout`] ends a body whose sender goes quiet (a slow
//! client's request body, a stalled upstream's response body), and
//! [`BodyDeadline`] ends a request body trickled slower than
//! `limits.min_body_rate` once `limits.body_deadline` is spent.

pub mod tee;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

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
    /// Wraps the error a body failed with.
    pub fn new(err: impl Into<BoxError>) -> Self {
        BodyError(err.into())
    }
}

/// Request and response bodies inside the gateway: streamed, type-erased once.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

/// A body with no bytes.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body of `bytes`, in one frame.
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
    /// The limit passed, in bytes (`limits.max_body`).
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
    /// Wraps `inner`, failing it with [`BodyTooLarge`] past `limit` bytes.
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

/// Raised by [`IdleTimeout`] when a body's sender sent nothing for the
/// whole timeout while the gateway was waiting for it.
#[derive(Debug, thiserror::Error)]
#[error("the body stalled: nothing arrived for {0:?}")]
pub struct BodyStalled(pub Duration);

pin_project_lite::pin_project! {
    /// Fails a body once its reader has waited `timeout` for the next frame.
    /// Only time spent waiting on the sender counts: while the reader does
    /// not ask (an upstream slow to take a request body), the clock is
    /// stopped, so a slow reader never fails a healthy sender.
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        timeout: Duration,
        // Kept between waits and reset, so a long body allocates one timer.
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        waiting: bool,
    }
}

impl<B> IdleTimeout<B> {
    /// Wraps `inner`, failing it once a wait for its next frame lasts `timeout`.
    pub fn new(inner: B, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            timer: None,
            waiting: false,
        }
    }
}

impl<B> HttpBody for IdleTimeout<B>
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
            Poll::Ready(frame) => {
                *this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(BodyError::new)))
            }
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + *this.timeout;
                let timer = match this.timer {
                    Some(timer) => {
                        if !*this.waiting {
                            timer.as_mut().reset(deadline);
                        }
                        timer
                    }
                    None => this
                        .timer
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                *this.waiting = true;
                if timer.as_mut().poll(cx).is_ready() {
                    *this.waiting = false;
                    return Poll::Ready(Some(Err(BodyError::new(BodyStalled(*this.timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Raised by [`BodyDeadline`] when a body's sender used up its time.
#[derive(Debug, thiserror::Error)]
#[error("the body arrived too slowly: {received} bytes in {waited:?}")]
pub struct BodyTooSlow {
    /// Bytes received before the deadline passed.
    pub received: u64,
    /// Time spent waiting for them.
    pub waited: Duration,
}

pin_project_lite::pin_project! {
    /// Bounds the total time a body's sender may take: the time the reader
    /// spends waiting for frames may not pass `deadline` plus one second
    /// per `min_rate` bytes received so far. A steady sender at or above
    /// the rate never runs out; one trickling a byte a second is cut off
    /// about `deadline` after it started, however short each gap. As with
    /// [`IdleTimeout`], time the reader does not ask for a frame (a slow
    /// upstream) is not counted.
    pub struct BodyDeadline<B> {
        #[pin]
        inner: B,
        deadline: Duration,
        min_rate: u64,
        received: u64,
        waited: Duration,
        waiting_since: Option<tokio::time::Instant>,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<B> BodyDeadline<B> {
    /// `min_rate` in bytes per second; 0: `deadline` is the whole allowance.
    pub fn new(inner: B, deadline: Duration, min_rate: u64) -> Self {
        BodyDeadline {
            inner,
            deadline,
            min_rate,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
        }
    }
}

/// `deadline` plus what `received` bytes earned at `min_rate` bytes/s.
fn allowance(deadline: Duration, min_rate: u64, received: u64) -> Duration {
    if min_rate == 0 {
        return deadline;
    }
    let nanos = u128::from(received) * 1_000_000_000 / u128::from(min_rate);
    let earned = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    deadline.saturating_add(earned)
}

impl<B> HttpBody for BodyDeadline<B>
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
        let too_slow = |received: u64, waited: Duration| {
            Poll::Ready(Some(Err(BodyError::new(BodyTooSlow { received, waited }))))
        };
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = this.waiting_since.take() {
                    *this.waited = this.waited.saturating_add(since.elapsed());
                }
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
                    *this.received = this
                        .received
                        .saturating_add(data.map_or(0, |d| d.len() as u64));
                }
                let allowed = allowance(*this.deadline, *this.min_rate, *this.received);
                if *this.waited > allowed && frame.is_some() {
                    return too_slow(*this.received, *this.waited);
                }
                Poll::Ready(frame.map(|f| f.map_err(BodyError::new)))
            }
            Poll::Pending => {
                let now = tokio::time::Instant::now();
                let since = *this.waiting_since.get_or_insert(now);
                let allowed = allowance(*this.deadline, *this.min_rate, *this.received);
                let Some(left) = allowed.checked_sub(*this.waited) else {
                    return too_slow(*this.received, *this.waited);
                };
                let deadline = since + left;
                let timer = match this.timer {
                    Some(timer) => {
                        if timer.deadline() != deadline {
                            timer.as_mut().reset(deadline);
                        }
                        timer
                    }
                    None => this
                        .timer
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                if timer.as_mut().poll(cx).is_ready() {
                    let waited = this.waited.saturating_add(now - since);
                    return too_slow(*this.received, waited);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// True when `err` or anything in its source chain is a [`BodyError`]: the
/// request body the gateway was forwarding failed (the caller broke it off,
/// sent broken chunked framing, stalled or sent too much), not the upstream.
pub fn is_request_body_error(err: &(dyn std::error::Error + 'static)) -> bool {
    source_chain(err).any(|e| e.is::<BodyError>())
}

/// Reads a whole request body (already bounded by `max_body` as it
/// streams). A failure comes back as the caller's refusal: 413 when the
/// body ran over the limit, 400 when it broke off or stalled.
pub async fn collect_request(body: Body) -> Result<Bytes, crate::problem::Reject> {
    use crate::problem::{Code, Reject};
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if is_body_too_large(&e) => Err(Reject::new(
            Code::BodyTooLarge,
            "the request body is larger than the gateway accepts",
        )),
        Err(_) => Err(Reject::new(
            Code::InvalidRequestBody,
            "the request body broke off",
        )),
    }
}

/// True when `err` or anything in its source chain is a [`BodyTooLarge`].
pub fn is_body_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    source_chain(err).any(|e| e.is::<BodyTooLarge>())
}

/// `err`, then its source, then that one's source...
pub fn source_chain<'e>(
    err: &'e (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'e (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
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

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_runs_out_of_time_while_a_steady_one_does_not() {
        let trickle = |gap: Duration, bytes: usize| {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
            tokio::spawn(async move {
                for _ in 0..bytes {
                    tokio::time::sleep(gap).await;
                    if tx
                        .send(Ok(Frame::data(Bytes::from_static(b"x"))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            StreamBody::new(Box::pin(stream))
        };
        // One byte a second against 10s + 1s per 100 bytes: cut off at 10s.
        let started = tokio::time::Instant::now();
        let err = BodyDeadline::new(
            trickle(Duration::from_secs(1), 60),
            Duration::from_secs(10),
            100,
        )
        .collect()
        .await
        .expect_err("too slow");
        assert!(is_request_body_error(&err));
        assert!(err.to_string().contains("too slowly"), "{err}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(10) && took <= Duration::from_secs(11),
            "{took:?}"
        );
        // 100 bytes a second (1 every 10ms) for 20s earns its time.
        let ok = BodyDeadline::new(
            trickle(Duration::from_millis(10), 2000),
            Duration::from_secs(10),
            100,
        )
        .collect()
        .await
        .expect("steady enough");
        assert_eq!(ok.to_bytes().len(), 2000);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_fails_a_body_only_after_the_sender_went_quiet() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let mut body = IdleTimeout::new(StreamBody::new(Box::pin(stream)), Duration::from_secs(5));
        let sender = tokio::spawn(async move {
            // Gaps under the timeout keep the body alive, however many.
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"x")))).await;
            }
            // Then silence, with the sender still connected.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        for _ in 0..3 {
            let frame = body.frame().await.expect("a frame").expect("data");
            assert_eq!(frame.into_data().ok().as_deref(), Some(&b"x"[..]));
        }
        let started = tokio::time::Instant::now();
        let err = body.frame().await.expect("an error").expect_err("stalled");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(is_request_body_error(&err));
        assert!(err.to_string().contains("stalled"), "{err}");
        sender.abort();
    }
}
