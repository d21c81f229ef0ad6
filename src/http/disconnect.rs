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
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use actix_web::dev::Extensions;
use actix_web::HttpRequest;
use futures::{Stream, StreamExt};

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
pub fn until_disconnect<S>(req: &HttpRequest, events: S) -> impl Stream<Item = S::Item>
where
    S: Stream + Unpin + 'static,
{
    let fd = req.conn_data::<PeerSocket>().map(|p| p.0);
    let mut check =
        tokio::time::interval_at(tokio::time::Instant::now() + CHECK_EVERY, CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures::stream::unfold(
        (events, check, fd),
        |(mut events, mut check, fd)| async move {
            let Some(fd) = fd else {
                let item = events.next().await?;
                return Some((item, (events, check, None)));
            };
            loop {
                tokio::select! {
                    item = events.next() => {
                        // Only a quiet stream needs checking (a write to a gone client fails by
                        // itself), so a busy stream never wakes for the check.
                        check.reset();
                        return item.map(|i| (i, (events, check, Some(fd))));
                    }
                    _ = check.tick() => {
                        if peer_gone(fd) {
                            tracing::info!(target: "api.streaming", "client went away; cancelling the model call");
                            return None;
                        }
                    }
                }
            }
        },
    )
}
