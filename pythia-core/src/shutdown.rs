//! Shutdown signals: SIGTERM and SIGINT start a graceful drain.

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
///
/// ```no_run
/// # async fn demo() {
/// pythia_core::shutdown::signal().await;
/// println!("draining");
/// # }
/// ```
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolves on the first SIGTERM or SIGINT, as [`signal`], and from then on
/// exits the process (status 130) at a second one: a worker's
/// `run_until_signal` drains on the first signal, and an operator who
/// signals again does not wait for the drain (what was not committed or
/// acknowledged is delivered again).
///
/// ```no_run
/// # async fn demo() {
/// pythia_core::shutdown::drain_signal().await;
/// println!("draining; a second signal exits");
/// # }
/// ```
pub async fn drain_signal() {
    signal().await;
    tokio::spawn(async {
        signal().await;
        tracing::warn!("second signal: exiting without finishing the drain");
        std::process::exit(130);
    });
}
