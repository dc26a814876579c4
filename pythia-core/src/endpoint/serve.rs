//! The accept loop: one hyper HTTP/1 connection per client, at most
//! [`Limits::max_connections`] at once, each bounded in time, and a graceful
//! stop.
//!
//! Edge cases taken from hyper and axum: an `accept()` error that is about
//! the new connection (reset before it was accepted) is skipped; any other
//! (out of file descriptors, say) waits a second before trying again, rather
//! than spinning.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::limits::Limits;

/// Serves `app` on `listener` until `stop` turns true (or its sender is
/// dropped), then waits up to `limits.shutdown_grace` for requests in
/// progress.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let places = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    loop {
        let place = tokio::select! {
            place = places.clone().acquire_owned() => match place {
                Ok(place) => place,
                Err(_) => break,
            },
            _ = stopped(&mut stop) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) if is_about_the_connection(&error) => continue,
                Err(error) => {
                    tracing::warn!(%error, "the endpoint cannot accept connections; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let (lifetime, grace, mut stop) = (
            limits.connection_lifetime,
            limits.request_timeout,
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => log_end(result),
                // Too old, or the server stops: finish the request in
                // progress, then close.
                () = tokio::time::sleep(lifetime) => {
                    connection.as_mut().graceful_shutdown();
                    if let Ok(result) = tokio::time::timeout(grace, connection).await {
                        log_end(result);
                    }
                }
                () = stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    if let Ok(result) = tokio::time::timeout(grace, connection).await {
                        log_end(result);
                    }
                }
            }
            drop(place);
        });
    }
    drop(listener);
    // Every connection holds a place: all places back, all are closed.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_grace, places.acquire_many(all))
        .await
        .is_err()
    {
        tracing::debug!("endpoint stopped with requests still in progress");
    }
}

/// Resolves once `stop` says stop, or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        tracing::debug!(%error, "endpoint connection ended with an error");
    }
}

/// Errors of `accept()` that concern only the connection being accepted.
fn is_about_the_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
