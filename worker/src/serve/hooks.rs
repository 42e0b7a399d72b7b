//! Webhooks from the tools people answer in: `POST /hooks/pagerduty` takes PagerDuty v3 webhook
//! events ([`crate::feedback::pagerduty`]). A request whose signature does not verify is refused
//! (403) and logged without its body; one that is not an event is refused (400); an event that
//! is nothing for apiwatch is answered 200 (PagerDuty retries anything else) and counted in the
//! log; an apiwatch incident's acknowledgement, or its resolution by a person, is written as
//! the `ack` record `apiwatch ack` writes (its note says which), once per PagerDuty event. Off
//! (404) without `APIWATCH_PAGERDUTY_WEBHOOK_SECRET`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::api::ApiContext;
use crate::es::feedback as store;
use crate::feedback::pagerduty::{parse, verify, HookEvent, HookRefusal};
use crate::feedback::FeedbackRecord;

type Reply = (StatusCode, Json<Value>);

fn reply(code: StatusCode, body: Value) -> Reply {
    (code, Json(body))
}

async fn pagerduty(State(ctx): State<Arc<ApiContext>>, headers: HeaderMap, body: Bytes) -> Reply {
    let Some(secret) = ctx.pagerduty.as_ref() else {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"error": "PagerDuty webhooks are off: set APIWATCH_PAGERDUTY_WEBHOOK_SECRET to the subscription's secret"}),
        );
    };
    let signature = headers.get("x-pagerduty-signature").and_then(|v| v.to_str().ok());
    let refused = |code: StatusCode, why: &HookRefusal| {
        tracing::warn!(reason = %why, bytes = body.len(), "refused a PagerDuty webhook");
        reply(code, json!({"error": why.to_string()}))
    };
    if let Err(e) = verify(secret, &body, signature) {
        return refused(StatusCode::FORBIDDEN, &e);
    }
    let event = match parse(&body) {
        Ok(e) => e,
        Err(e) => return refused(StatusCode::BAD_REQUEST, &e),
    };
    let (alert_id, event_id, by, at, note) = match event {
        HookEvent::Acknowledged {
            alert_id,
            event_id,
            by,
            at,
            incident,
            resolved,
        } => {
            let note = match resolved {
                true => format!("resolved by hand in PagerDuty ({incident}): not notified again; apiwatch resolves it on its evidence"),
                false => format!("acknowledged in PagerDuty ({incident})"),
            };
            (alert_id, event_id, by, at, note)
        }
        HookEvent::Ignored(what) => {
            tracing::info!(what = %what, "a PagerDuty webhook event with nothing for apiwatch");
            return reply(StatusCode::OK, json!({"ignored": what}));
        }
    };
    let ctx = ctx.clone();
    let written = tokio::task::spawn_blocking(move || {
        let id = format!("pagerduty-{event_id}");
        if store::get(&ctx.client, &ctx.names, &id)?.is_some() {
            return Ok((id, false));
        }
        let at = at.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        let mut r = FeedbackRecord::ack(&alert_id, &by, at, Some(note));
        r.id.clone_from(&id);
        store::write(&ctx.client, &ctx.names, &r)?;
        tracing::info!(alert_id = %alert_id, by = %by, feedback_id = %id, note = %r.note.as_deref().unwrap_or_default(), "an answer came back from PagerDuty");
        Ok::<_, store::FeedbackStoreError>((id, true))
    })
    .await;
    match written {
        Ok(Ok((id, true))) => reply(StatusCode::OK, json!({"acknowledged": id})),
        Ok(Ok((id, false))) => reply(StatusCode::OK, json!({"already": id})),
        // Not 2xx: PagerDuty delivers it again later.
        Ok(Err(e)) => reply(StatusCode::BAD_GATEWAY, json!({"error": e.to_string()})),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": e.to_string()})),
    }
}

/// The webhooks' routes.
pub fn routes(ctx: Arc<ApiContext>) -> Router {
    Router::new().route("/hooks/pagerduty", post(pagerduty)).with_state(ctx)
}
