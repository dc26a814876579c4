//! The control socket of a running fleet: a Unix socket taking one JSON
//! request per connection (`{"op":"status"}`, `{"op":"scale","instances":N}`)
//! and answering one JSON line. `fleet status` and `fleet scale` are its clients.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// A request for the fleet's loop, with where its answer goes.
pub(crate) struct Request {
    pub(crate) body: Value,
    pub(crate) reply: oneshot::Sender<Value>,
}

/// The bound socket; removes its file when dropped.
pub(crate) struct Control {
    path: PathBuf,
}

impl Control {
    /// Binds `path` and forwards each request to `requests`. A file left by
    /// a fleet that is gone is replaced; a live fleet there is an error.
    pub(crate) async fn bind(path: &Path, requests: mpsc::Sender<Request>) -> anyhow::Result<Self> {
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                bail!(
                    "a fleet already answers on {}; stop it, or give this one another --control path",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale control socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(path).with_context(|| {
            format!(
                "binding the control socket {}; choose a writable --control path",
                path.display()
            )
        })?;
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let requests = requests.clone();
                tokio::spawn(async move {
                    if let Err(error) = serve(stream, requests).await {
                        tracing::debug!(%error, "control request failed");
                    }
                });
            }
        });
        Ok(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(stream: UnixStream, requests: mpsc::Sender<Request>) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let answer = match serde_json::from_str::<Value>(&line) {
        Ok(body) => {
            let (reply, answer) = oneshot::channel();
            requests
                .send(Request { body, reply })
                .await
                .context("the fleet is stopping")?;
            answer.await.context("the fleet is stopping")?
        }
        Err(error) => json!({"error": format!("not a JSON request: {error}")}),
    };
    write.write_all(format!("{answer}\n").as_bytes()).await?;
    Ok(())
}

/// Sends `request` to the fleet at `path` and returns its answer; an answer
/// with an `error` is an error.
pub(crate) async fn ask(path: &Path, request: Value) -> anyhow::Result<Value> {
    let stream = UnixStream::connect(path).await.with_context(|| {
        format!(
            "no fleet answers on {}; start one with `pythia fleet run`, or give its --control path",
            path.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{request}\n").as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let answer: Value = serde_json::from_str(&line)
        .with_context(|| format!("the fleet on {} answered no JSON", path.display()))?;
    if let Some(error) = answer["error"].as_str() {
        bail!("{error}");
    }
    Ok(answer)
}
