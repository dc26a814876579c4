//! The console's HTTP side: the page and its assets, and a JSON API the
//! page polls. Broker calls block, so each runs on the blocking pool.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, extract::Json as JsonBody};
use pythia_kafka::{LagReader, lag_json};
use serde::Deserialize;

use super::{Console, Replay, dead_letters, groups};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// The header a replay request carries its token in.
pub(crate) const TOKEN_HEADER: &str = "x-pythia-token";

type Shared = State<Arc<Console>>;

pub(crate) fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/assets/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/assets/console.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/api/info", get(info))
        .route("/api/groups", get(groups))
        .route("/api/lag", get(lag))
        .route("/api/instances", get(instances))
        .route("/api/dlq/topics", get(dlq_topics))
        .route("/api/dlq", get(dlq))
        .route("/api/dlq/replay", post(replay))
        .with_state(console)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn failure(status: StatusCode, error: impl std::fmt::Display) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": error.to_string() })),
    )
        .into_response()
}

/// Runs a blocking broker call on the blocking pool; an error is a 502.
async fn blocking(
    console: &Arc<Console>,
    call: impl FnOnce(&Console) -> anyhow::Result<serde_json::Value> + Send + 'static,
) -> Response {
    let console = console.clone();
    match tokio::task::spawn_blocking(move || call(&console)).await {
        Ok(Ok(json)) => Json(json).into_response(),
        Ok(Err(error)) => failure(StatusCode::BAD_GATEWAY, format!("{error:#}")),
        Err(error) => failure(StatusCode::INTERNAL_SERVER_ERROR, error),
    }
}

async fn info(State(console): Shared) -> Json<serde_json::Value> {
    let (replay, token) = match &console.replay {
        Replay::Off => (false, false),
        Replay::On { token } => (true, token.is_some()),
    };
    Json(serde_json::json!({
        "replay": replay,
        "token_required": token,
        "instances": console.instances.len(),
    }))
}

/// The groups as the broker describes them; from the instances' own
/// `/status` when the broker cannot list groups (librdkafka's mock cluster,
/// say), or lists none.
async fn groups(State(console): Shared) -> Response {
    let statuses = crate::probe::statuses(&console.instances, INSTANCE_TIMEOUT).await;
    let mut named = console.groups.clone();
    named.extend(
        statuses
            .iter()
            .filter_map(|s| s["group"].as_str())
            .map(str::to_owned),
    );
    named.sort();
    named.dedup();
    let described = {
        let console = console.clone();
        tokio::task::spawn_blocking(move || {
            let client = console.client.lock().unwrap_or_else(|p| p.into_inner());
            groups::describe(&client, console.timeout, &named)
        })
        .await
    };
    let why = match described {
        Ok(Ok(groups)) if groups.as_array().is_some_and(|g| !g.is_empty()) => {
            return Json(serde_json::json!({ "source": "broker", "groups": groups }))
                .into_response();
        }
        Ok(Ok(_)) => "the broker describes no group".to_owned(),
        Ok(Err(error)) => format!("{error:#}"),
        Err(error) => error.to_string(),
    };
    Json(serde_json::json!({
        "source": "instances",
        "note": format!("groups from the instances' /status: {why}"),
        "groups": groups::from_instances(&statuses),
    }))
    .into_response()
}

/// Groups whose lag readers are kept between requests.
const MAX_LAG_READERS: usize = 16;

/// Longest wait for an instance's `/status`.
const INSTANCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Deserialize)]
struct GroupQuery {
    group: String,
}

/// The same JSON as `pythia lag --json --group G`.
async fn lag(State(console): Shared, Query(query): Query<GroupQuery>) -> Response {
    blocking(&console, move |c| {
        let mut readers = c.lag.lock().unwrap_or_else(|p| p.into_inner());
        // Two broker clients per group asked about: keep a bounded number.
        if readers.len() >= MAX_LAG_READERS && !readers.contains_key(&query.group) {
            readers.clear();
        }
        if !readers.contains_key(&query.group) {
            let reader = LagReader::new(&c.kafka, &query.group, c.timeout)?;
            readers.insert(query.group.clone(), reader);
        }
        let reader = readers.get_mut(&query.group).expect("inserted above");
        let lags = reader.read(&[], None)?;
        Ok(lag_json(&query.group, &lags))
    })
    .await
}

async fn instances(State(console): Shared) -> Json<serde_json::Value> {
    let all = crate::probe::statuses(&console.instances, INSTANCE_TIMEOUT).await;
    Json(serde_json::Value::Array(all))
}

async fn dlq_topics(State(console): Shared) -> Response {
    blocking(&console, |c| {
        let client = c.client.lock().unwrap_or_else(|p| p.into_inner());
        let metadata = rdkafka::consumer::Consumer::fetch_metadata(&*client, None, c.timeout)?;
        let mut topics: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .filter(|name| name.ends_with(".dlq") || c.dlq_topics.contains(name))
            .collect();
        topics.sort();
        Ok(serde_json::json!(topics))
    })
    .await
}

#[derive(Deserialize)]
struct DlqQuery {
    topic: String,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    50
}

async fn dlq(State(console): Shared, Query(query): Query<DlqQuery>) -> Response {
    blocking(&console, move |c| {
        let client = c.client.lock().unwrap_or_else(|p| p.into_inner());
        let limit = query.limit.clamp(1, 500);
        let messages = dead_letters::read(&client, &query.topic, limit, c.timeout)?;
        Ok(serde_json::json!({ "topic": query.topic, "messages": messages }))
    })
    .await
}

#[derive(Deserialize)]
struct ReplayRequest {
    topic: String,
    messages: Vec<Chosen>,
    #[serde(default)]
    to: Option<String>,
}

#[derive(Deserialize)]
struct Chosen {
    partition: i32,
    offset: i64,
}

/// Whether a replay request may go ahead: replay must be on, and the
/// token, when one is set, must match.
pub(crate) fn authorize(
    replay: &Replay,
    token: Option<&str>,
) -> Result<(), (StatusCode, &'static str)> {
    match replay {
        Replay::Off => Err((
            StatusCode::FORBIDDEN,
            "the console is read-only: start it with --allow-replay to replay dead letters",
        )),
        Replay::On { token: None } => Ok(()),
        Replay::On {
            token: Some(expected),
        } if token == Some(expected.expose()) => Ok(()),
        Replay::On { token: Some(_) } => Err((
            StatusCode::UNAUTHORIZED,
            "a replay token is required: send it in the x-pythia-token header",
        )),
    }
}

async fn replay(
    State(console): Shared,
    headers: HeaderMap,
    JsonBody(request): JsonBody<ReplayRequest>,
) -> Response {
    let token = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    if let Err((status, why)) = authorize(&console.replay, token) {
        tracing::warn!(target: "pythia::audit", action = "dlq.replay", topic = %request.topic, refused = why, "replay refused");
        return failure(status, why);
    }
    if request.messages.is_empty() {
        return failure(StatusCode::BAD_REQUEST, "no message chosen");
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    blocking(&console, move |c| {
        let chosen: Vec<(i32, i64)> = request
            .messages
            .iter()
            .map(|m| (m.partition, m.offset))
            .collect();
        let listed = chosen
            .iter()
            .map(|(p, o)| format!("{p}@{o}"))
            .collect::<Vec<_>>()
            .join(",");
        let result = pythia_kafka::replay_selected(
            &c.kafka,
            &request.topic,
            &chosen,
            request.to.as_deref(),
            c.timeout,
        );
        match &result {
            Ok(summary) => {
                let targets: Vec<&String> = summary.replayed.keys().collect();
                tracing::info!(
                    target: "pythia::audit",
                    action = "dlq.replay",
                    topic = %request.topic,
                    messages = %listed,
                    replayed = summary.total(),
                    skipped = summary.skipped,
                    to = ?targets,
                    user_agent = %agent,
                    "dead letters replayed; every send confirmed"
                );
            }
            Err(error) => tracing::warn!(
                target: "pythia::audit",
                action = "dlq.replay",
                topic = %request.topic,
                messages = %listed,
                %error,
                user_agent = %agent,
                "dead-letter replay failed"
            ),
        }
        let summary = result?;
        Ok(serde_json::json!({
            "replayed": summary.total(),
            "skipped": summary.skipped,
            "to": summary.replayed,
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use pythia_kafka::Secret;

    #[test]
    fn replay_is_refused_unless_turned_on_and_the_token_matches() {
        let with_token = Replay::On {
            token: Some(Secret::new("t0ken")),
        };
        let cases: [(&Replay, Option<&str>, Result<(), StatusCode>); 5] = [
            (&Replay::Off, None, Err(StatusCode::FORBIDDEN)),
            (&Replay::Off, Some("t0ken"), Err(StatusCode::FORBIDDEN)),
            (&Replay::On { token: None }, None, Ok(())),
            (&with_token, Some("t0ken"), Ok(())),
            (&with_token, Some("guess"), Err(StatusCode::UNAUTHORIZED)),
        ];
        for (replay, token, expected) in cases {
            assert_eq!(
                authorize(replay, token).map_err(|(s, _)| s),
                expected,
                "{token:?}"
            );
        }
        assert_eq!(
            authorize(&with_token, None).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
    }
}
