//! The write API on the worker (`run --listen`): read open alerts, acknowledge one, list, add
//! and end silences, give a verdict — the same records as `apiwatch ack`, `silence` and
//! `feedback` (see [`crate::feedback`]), written to the feedback index the workers read.
//!
//! Writes need `Authorization: Bearer <token>` with the token from `APIWATCH_API_TOKEN`; with
//! no token set the write API is off (403, saying how to turn it on). The token is compared in
//! constant time and never logged or echoed. Each write records who (`by` in the body, else
//! `api`) and when. Elasticsearch calls are blocking, so they run on the runtime's blocking pool.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::es::feedback as store;
use crate::es::{EsClient, IndexNames};
use crate::feedback::{FeedbackRecord, FeedbackType, SilenceSpec, Verdict};
use crate::model::anomaly::AnomalyKind;
use crate::model::time::Millis;

/// What the API needs: where feedback goes, and the token that allows writes.
pub struct ApiContext {
    pub(super) client: EsClient,
    pub(super) names: IndexNames,
    token: Option<String>,
    /// Checks the answering links of messages ([`super::link_pages`]); `None`: off.
    pub(super) links: Option<crate::feedback::link::ActionLinks>,
    /// Checks PagerDuty's webhooks ([`super::hooks`]); `None`: off.
    pub(super) pagerduty: Option<crate::feedback::pagerduty::WebhookSecret>,
}

impl ApiContext {
    /// `token`: from `APIWATCH_API_TOKEN`, `None` or empty turns writes off; `links`: checks the
    /// answering links of messages (`None` turns them off); `pagerduty`: checks PagerDuty's
    /// webhooks (`None` turns them off).
    pub fn new(
        client: EsClient,
        names: IndexNames,
        token: Option<String>,
        links: Option<crate::feedback::link::ActionLinks>,
        pagerduty: Option<crate::feedback::pagerduty::WebhookSecret>,
    ) -> Arc<Self> {
        Arc::new(ApiContext {
            client,
            names,
            token: token.filter(|t| !t.is_empty()),
            links,
            pagerduty,
        })
    }
}

type Reply = (StatusCode, Json<Value>);

fn error(code: StatusCode, message: impl Into<String>) -> Reply {
    (code, Json(json!({ "error": message.into() })))
}

/// Whether the request may write.
fn authorize(ctx: &ApiContext, headers: &HeaderMap) -> Result<(), Reply> {
    let Some(token) = &ctx.token else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "the write API is off: start the worker with APIWATCH_API_TOKEN set",
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNAUTHORIZED,
            "a valid `Authorization: Bearer <token>` is required",
        ))
    }
}

/// Equal slices, in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs blocking Elasticsearch work off the runtime; its error is a 502 naming the cause.
async fn blocking(
    ctx: &Arc<ApiContext>,
    f: impl FnOnce(&ApiContext) -> Result<Reply, store::FeedbackStoreError> + Send + 'static,
) -> Reply {
    let ctx = ctx.clone();
    match tokio::task::spawn_blocking(move || f(&ctx)).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(store::FeedbackStoreError::NoSuchAlert { index, id })) => error(StatusCode::NOT_FOUND, format!("no alert {id} in {index}")),
        Ok(Err(e)) => error(StatusCode::BAD_GATEWAY, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("the request ended abnormally: {e}")),
    }
}

fn now() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Deserialize)]
struct AlertsQuery {
    status: Option<String>,
}

async fn alerts(State(ctx): State<Arc<ApiContext>>, Query(q): Query<AlertsQuery>) -> Reply {
    blocking(&ctx, move |ctx| {
        let query = match &q.status {
            Some(s) => json!({"term": {"alert.status": s}}),
            None => json!({"match_all": {}}),
        };
        let body = json!({"size": 200, "sort": [{"@timestamp": "desc"}], "query": query});
        let path = format!("/{}/_search?ignore_unavailable=true&allow_no_indices=true", ctx.names.alerts);
        let v = ctx.client.json("POST", &path, Some(&body))?;
        let docs: Vec<Value> = v
            .pointer("/hits/hits")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|h| h.get("_source").cloned())
            .collect();
        Ok((StatusCode::OK, Json(Value::Array(docs))))
    })
    .await
}

#[derive(Deserialize, Default)]
struct Said {
    by: Option<String>,
    note: Option<String>,
}

fn who(by: Option<String>) -> String {
    by.filter(|b| !b.trim().is_empty()).unwrap_or_else(|| "api".to_owned())
}

fn written(r: &FeedbackRecord) -> Reply {
    (StatusCode::OK, Json(serde_json::to_value(r).unwrap_or(Value::Null)))
}

async fn ack(State(ctx): State<Arc<ApiContext>>, Path(id): Path<String>, headers: HeaderMap, body: Option<Json<Said>>) -> Reply {
    if let Err(e) = authorize(&ctx, &headers) {
        return e;
    }
    let said = body.map(|b| b.0).unwrap_or_default();
    blocking(&ctx, move |ctx| {
        let r = FeedbackRecord::ack(&id, &who(said.by), now(), said.note);
        store::write(&ctx.client, &ctx.names, &r)?;
        Ok(written(&r))
    })
    .await
}

async fn silences(State(ctx): State<Arc<ApiContext>>) -> Reply {
    blocking(&ctx, |ctx| {
        let read = store::read_since(&ctx.client, &ctx.names, None)?;
        let list: Vec<Value> = read
            .records
            .iter()
            .filter(|r| r.kind == FeedbackType::Silence && !r.removed)
            .filter_map(|r| serde_json::to_value(r).ok())
            .collect();
        Ok((StatusCode::OK, Json(Value::Array(list))))
    })
    .await
}

#[derive(Deserialize)]
struct NewSilence {
    service: Option<String>,
    provider: Option<String>,
    route: Option<String>,
    kind: Option<AnomalyKind>,
    priority: Option<String>,
    /// Seconds from `start` (default now).
    for_secs: u64,
    start: Option<String>,
    reason: Option<String>,
    by: Option<String>,
}

async fn add_silence(State(ctx): State<Arc<ApiContext>>, headers: HeaderMap, Json(s): Json<NewSilence>) -> Reply {
    if let Err(e) = authorize(&ctx, &headers) {
        return e;
    }
    let t = now();
    let start = match s.start.as_deref().map(crate::model::time::parse_rfc3339) {
        None => t,
        Some(Some(start)) => start,
        Some(None) => return error(StatusCode::BAD_REQUEST, "start must be an RFC 3339 time"),
    };
    let span = (s.for_secs as Millis).saturating_mul(1000);
    let spec = SilenceSpec {
        service: s.service,
        provider: s.provider,
        route: s.route,
        kind: s.kind,
        priority: s.priority,
        start: Some(start),
        end: Some(start.saturating_add(span)),
    };
    let r = FeedbackRecord::silence(spec, &who(s.by), t, s.reason);
    if span <= 0 {
        return error(StatusCode::BAD_REQUEST, "for_secs must be more than zero: a silence always ends");
    }
    if let Err(e) = r.validate() {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    blocking(&ctx, move |ctx| {
        store::write(&ctx.client, &ctx.names, &r)?;
        Ok(written(&r))
    })
    .await
}

async fn end_silence(State(ctx): State<Arc<ApiContext>>, Path(id): Path<String>, headers: HeaderMap, body: Option<Json<Said>>) -> Reply {
    if let Err(e) = authorize(&ctx, &headers) {
        return e;
    }
    let said = body.map(|b| b.0).unwrap_or_default();
    blocking(&ctx, move |ctx| match store::get(&ctx.client, &ctx.names, &id)? {
        Some(r) if r.kind == FeedbackType::Silence => {
            let w = r.withdrawn(&who(said.by), now());
            store::write(&ctx.client, &ctx.names, &w)?;
            Ok(written(&w))
        }
        _ => Ok(error(StatusCode::NOT_FOUND, format!("no silence {id}"))),
    })
    .await
}

#[derive(Deserialize)]
struct NewVerdict {
    alert_id: String,
    verdict: Verdict,
    note: Option<String>,
    by: Option<String>,
}

async fn add_verdict(State(ctx): State<Arc<ApiContext>>, headers: HeaderMap, Json(v): Json<NewVerdict>) -> Reply {
    if let Err(e) = authorize(&ctx, &headers) {
        return e;
    }
    blocking(&ctx, move |ctx| {
        let (_, findings) = store::alert_with_findings(&ctx.client, &ctx.names, &v.alert_id)?;
        let r = FeedbackRecord::verdict(&v.alert_id, v.verdict, findings, &who(v.by), now(), v.note);
        if let Err(e) = r.validate() {
            return Ok(error(StatusCode::CONFLICT, e.to_string()));
        }
        store::write(&ctx.client, &ctx.names, &r)?;
        Ok(written(&r))
    })
    .await
}

/// The API's routes.
pub fn routes(ctx: Arc<ApiContext>) -> Router {
    Router::new()
        .route("/api/alerts", get(alerts))
        .route("/api/alerts/{id}/ack", post(ack))
        .route("/api/silences", get(silences).post(add_silence))
        .route("/api/silences/{id}", delete(end_silence))
        .route("/api/feedback", post(add_verdict))
        .with_state(ctx.clone())
        .merge(super::link_pages::routes(ctx.clone()))
        .merge(super::hooks::routes(ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_exact() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"", b"s3cret"));
    }
}
