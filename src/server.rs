//! The accept loop under the HTTP service: hyper with a deadline for reading a
//! request's headers (a client that trickles them, slowloris, is dropped), at most
//! a set number of connections at once, and graceful shutdown. axum's own `serve`
//! offers neither the timeout nor the cap.
//!
//! A connection holds a [`ConnectionSlot`] for as long as it lives: an HTTP
//! connection in its task, a WebSocket in its session (the slot travels in the
//! upgrade request's extensions), so upgraded sockets count against the cap too.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

use crate::config::HttpLimits;

/// How long shutdown waits for HTTP requests in flight.
const DRAIN: Duration = Duration::from_secs(10);
/// After a failed accept (out of descriptors, say), a pause before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Refusals being answered at once; past it, a connection over the cap is closed
/// unanswered (a flood of them must not eat the descriptors the store needs).
const MAX_REFUSING: usize = 64;

/// One of the server's connection places; dropped when the connection ends.
#[derive(Debug, Clone)]
pub struct ConnectionSlot(#[expect(dead_code, reason = "held, never read")] Arc<OwnedSemaphorePermit>);

/// Serves `make` on `listener` until `stop` is cancelled, then stops accepting and
/// waits (up to a bound) for the requests in flight.
pub async fn serve<S>(
    listener: TcpListener,
    mut make: IntoMakeServiceWithConnectInfo<S, SocketAddr>,
    limits: HttpLimits,
    stop: CancellationToken,
) where
    S: Service<axum::extract::Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let graceful = GracefulShutdown::new();
    // HTTP/1 only: the header deadline is HTTP/1's, and no browser speaks HTTP/2
    // without TLS (which a proxy in front terminates).
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Each frame is written when it is ready (the writer batches what is queued
        // into one write): Nagle's algorithm would hold a small write back until the
        // previous one is acknowledged, up to the peer's delayed-ACK timer.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set");
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let slot = ConnectionSlot(Arc::new(permit));
        let Ok(service) = make.call(peer).await;
        let service = service.map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(slot.clone());
            request.map(axum::body::Body::new)
        });
        let connection =
            builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "an HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("some HTTP requests did not finish in time");
    }
}

/// Answers a connection past the cap with the contract's error body and closes it.
async fn refuse(mut stream: TcpStream) {
    let body = r#"{"error":"unavailable","detail":"the server is at its connection limit; try again shortly"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
        // Read what the client sent, so closing does not reset the answer away.
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}
