//! Noticing a client that went away while its stream is idle.
//!
//! actix-web learns that a client closed its connection only when a write fails, and a stream
//! whose model has gone quiet writes nothing: the model call would run on (holding an upstream
//! connection) until the idle timeout. So every API connection's socket is remembered when it is
//! accepted ([`on_connect`]), and a streamed response body is wrapped by [`until_disconnect`],
//! which checks the socket for the peer's FIN (`POLLRDHUP`) a few times a second while waiting
//! for the next event. When the client is gone the wrapped stream ends and drops the events
//! it was reading, which cancels the request actor's upstream call at once.
//!
//! HTTP clients do not half-close a connection they still read from, so a FIN means gone.

use std::any::Any;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::Extensions;
use actix_web::HttpRequest;
use futures::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

/// How often an idle stream checks its client.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// The socket of an API connection.
#[derive(Debug, Clone, Copy)]
pub struct PeerSocket(RawFd);

/// `HttpServer::on_connect` hook: remember the connection's socket.
pub fn on_connect(conn: &dyn Any, ext: &mut Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        ext.insert(PeerSocket(tcp.as_raw_fd()));
    }
}

/// Whether the peer of `fd` has closed its side (or the socket failed).
fn peer_gone(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout. The fd belongs to the connection whose response
    // body is polling us, so it is open for as long as this body exists.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// `events`, ending early (and dropping `events`) when the client of `req` goes away: checked
/// after every [`CHECK_EVERY`] without an event.
pub fn until_disconnect<S>(req: &HttpRequest, events: S) -> UntilDisconnect<S>
where
    S: Stream + Unpin,
{
    UntilDisconnect::new(events, req.conn_data::<PeerSocket>().map(|p| p.0))
}

/// The stream of [`until_disconnect`].
///
/// One timer serves the whole stream and is re-armed lazily: an event only records the time,
/// and a timer that fires less than [`CHECK_EVERY`] after the last event is moved to
/// [`CHECK_EVERY`] after it. (Resetting the timer on every event, as this once did, put a
/// timer-wheel removal and insertion on every streamed frame.)
pub struct UntilDisconnect<S> {
    /// `None` once the stream has ended or the client went away.
    events: Option<S>,
    fd: Option<RawFd>,
    last_event: Instant,
    check: Pin<Box<Sleep>>,
}

impl<S> UntilDisconnect<S> {
    /// `events`, ending when the peer of `fd` goes away (never, without a socket).
    fn new(events: S, fd: Option<RawFd>) -> Self {
        let now = Instant::now();
        Self {
            events: Some(events),
            fd,
            last_event: now,
            check: Box::pin(tokio::time::sleep_until(now + CHECK_EVERY)),
        }
    }
}

impl<S: Stream + Unpin> Stream for UntilDisconnect<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = &mut *self;
        let Some(events) = this.events.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(item) = events.poll_next_unpin(cx) {
            match item {
                Some(_) => this.last_event = Instant::now(),
                None => this.events = None,
            }
            return Poll::Ready(item);
        }
        let Some(fd) = this.fd else {
            return Poll::Pending;
        };
        while this.check.as_mut().poll(cx).is_ready() {
            let due = this.last_event + CHECK_EVERY;
            if Instant::now() >= due {
                if peer_gone(fd) {
                    tracing::info!(target: "api.streaming", "client went away; cancelling the model call");
                    this.events = None;
                    return Poll::Ready(None);
                }
                this.last_event = Instant::now();
            }
            this.check.as_mut().reset(this.last_event + CHECK_EVERY);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// A connected pair: (the client's end, the server's end).
    fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_ends_at_the_first_check_after_its_client_left() {
        let (client, server) = socket_pair();
        let mut stream =
            UntilDisconnect::new(futures::stream::pending::<u32>(), Some(server.as_raw_fd()));
        drop(client);
        let started = Instant::now();
        assert_eq!(stream.next().await, None);
        assert_eq!(started.elapsed(), CHECK_EVERY);
        assert!(stream.events.is_none(), "the events were dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_whose_client_is_there_waits_for_its_events() {
        let (_client, server) = socket_pair();
        let (tx, events) = futures::channel::mpsc::unbounded();
        let mut stream = UntilDisconnect::new(events, Some(server.as_raw_fd()));
        tokio::spawn(async move {
            // Quiet for thirty checks, then one event and the end.
            tokio::time::sleep(CHECK_EVERY * 30).await;
            let _ = tx.unbounded_send(7);
        });
        assert_eq!(stream.next().await, Some(7));
        assert_eq!(stream.next().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_check_comes_a_full_period_after_the_last_event() {
        let (client, server) = socket_pair();
        let (tx, events) = futures::channel::mpsc::unbounded();
        let mut stream = UntilDisconnect::new(events, Some(server.as_raw_fd()));
        let started = Instant::now();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(CHECK_EVERY * 3 / 2).await;
            let _ = tx.unbounded_send(1);
            // Keep the channel open: only the check can end the stream.
            std::future::pending::<()>().await;
            drop(tx);
        });
        assert_eq!(stream.next().await, Some(1));
        let event_at = started.elapsed();
        drop(client);
        assert_eq!(stream.next().await, None);
        // The timer that was due at CHECK_EVERY * 2 (one period after the first check) found
        // an event half a period old and moved to a full period after it.
        assert_eq!(started.elapsed(), event_at + CHECK_EVERY);
        sender.abort();
    }
}
