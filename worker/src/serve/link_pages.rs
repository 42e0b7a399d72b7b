//! The pages behind the answering links of messages ([`crate::feedback::link`]): `GET
//! /act/{action}/{alert}` checks the link and shows what it will do with a button (mail
//! scanners and link previews follow links with GET, so a GET never changes anything); the
//! button's `POST` to the same URL checks it again and writes the record — an acknowledgement,
//! a one-hour silence on the alert's origin, or a `false_positive` verdict with the alert's
//! findings — by `link (<channel>)`. A link acts once: its record's id comes from its signature,
//! so following it again says it was done and writes nothing. Refused links (forged, expired,
//! for another alert or action) get a page saying why and a warning in the log, which names the
//! action, alert and channel and never the signature.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use axum::Router;

use super::api::ApiContext;
use crate::es::feedback as store;
use crate::feedback::link::{LinkAction, LinkQuery, LinkRefusal, LINK_SILENCE};
use crate::feedback::{FeedbackRecord, SilenceSpec, Verdict};
use crate::http::url_encode;
use crate::model::time::format_rfc3339;
use crate::notify::render::html_escape;

type Page = (StatusCode, Html<String>);

fn page(code: StatusCode, title: &str, body_html: &str) -> Page {
    (
        code,
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\"><title>apiwatch: {t}</title></head><body style=\"font-family:sans-serif;max-width:40em;margin:2em auto\"><h2 id=\"title\">{t}</h2>{body_html}</body></html>",
            t = html_escape(title)
        )),
    )
}

/// The action a link asks for, if the link holds; otherwise the page saying why.
fn checked(ctx: &ApiContext, action: &str, alert_id: &str, q: &LinkQuery) -> Result<LinkAction, Page> {
    let Some(links) = ctx.links.as_ref() else {
        return Err(page(
            StatusCode::NOT_FOUND,
            "Answering links are off",
            "<p>This worker has no <code>[http] public_url</code> and <code>APIWATCH_LINK_SECRET</code>, so it makes and accepts no links.</p>",
        ));
    };
    let refused = |code: StatusCode, why: &LinkRefusal| {
        tracing::warn!(
            action,
            alert_id,
            via = q.via.as_deref().unwrap_or("-"),
            reason = %why,
            "refused an answering link"
        );
        Err(page(
            code,
            "This link cannot be used",
            &format!("<p id=\"why\">{}</p>", html_escape(&why.to_string())),
        ))
    };
    let Some(act) = LinkAction::parse(action) else {
        return refused(StatusCode::NOT_FOUND, &LinkRefusal::Malformed("unknown action"));
    };
    match links.verify(act, alert_id, q, chrono::Utc::now().timestamp_millis()) {
        Ok(()) => Ok(act),
        Err(e @ LinkRefusal::Expired(_)) => refused(StatusCode::GONE, &e),
        Err(e @ LinkRefusal::Forged) => refused(StatusCode::FORBIDDEN, &e),
        Err(e @ LinkRefusal::Malformed(_)) => refused(StatusCode::BAD_REQUEST, &e),
    }
}

fn what_it_does(action: LinkAction) -> &'static str {
    match action {
        LinkAction::Ack => "acknowledge the alert: it is not notified again until it resolves",
        LinkAction::Silence => "silence alerts on its origin for one hour: they are still written, marked silenced, and sent nowhere",
        LinkAction::NotAProblem => "say it was not a problem: the findings that raised it become harder to raise in the same circumstances",
    }
}

async fn confirm(State(ctx): State<Arc<ApiContext>>, Path((action, alert_id)): Path<(String, String)>, Query(q): Query<LinkQuery>) -> Page {
    let act = match checked(&ctx, &action, &alert_id, &q) {
        Ok(a) => a,
        Err(p) => return p,
    };
    let target = format!(
        "/act/{}/{}?via={}&exp={}&sig={}",
        act.as_str(),
        url_encode(&alert_id),
        url_encode(q.via.as_deref().unwrap_or_default()),
        q.exp.unwrap_or_default(),
        url_encode(q.sig.as_deref().unwrap_or_default())
    );
    page(
        StatusCode::OK,
        &format!("{} alert {alert_id}?", act.label()),
        &format!(
            "<p>This will {}.</p><form method=\"post\" action=\"{}\"><button id=\"confirm\" type=\"submit\">{}</button></form>",
            html_escape(what_it_does(act)),
            html_escape(&target),
            html_escape(act.label())
        ),
    )
}

async fn perform(State(ctx): State<Arc<ApiContext>>, Path((action, alert_id)): Path<(String, String)>, Query(q): Query<LinkQuery>) -> Page {
    let act = match checked(&ctx, &action, &alert_id, &q) {
        Ok(a) => a,
        Err(p) => return p,
    };
    let ctx = ctx.clone();
    let done = tokio::task::spawn_blocking(move || write_answer(&ctx, act, &alert_id, &q)).await;
    match done {
        Ok(Ok(p)) => p,
        Ok(Err(store::FeedbackStoreError::NoSuchAlert { id, .. })) => page(
            StatusCode::NOT_FOUND,
            "No such alert",
            &format!("<p>There is no alert {} (yet): try again in a minute.</p>", html_escape(&id)),
        ),
        Ok(Err(e)) => page(
            StatusCode::BAD_GATEWAY,
            "Not done: Elasticsearch did not answer",
            &format!("<p>{}</p><p>Follow the link again in a moment.</p>", html_escape(&e.to_string())),
        ),
        Err(e) => page(StatusCode::INTERNAL_SERVER_ERROR, "Not done", &html_escape(&e.to_string())),
    }
}

/// Writes what the link does, once.
fn write_answer(ctx: &ApiContext, act: LinkAction, alert_id: &str, q: &LinkQuery) -> Result<Page, store::FeedbackStoreError> {
    let via = q.via.as_deref().unwrap_or_default();
    let sig = q.sig.as_deref().unwrap_or_default();
    let id = format!("link-{}-{}", act.as_str(), &sig[..sig.len().min(24)]);
    if let Some(before) = store::get(&ctx.client, &ctx.names, &id)? {
        return Ok(page(
            StatusCode::OK,
            "Already done",
            &format!(
                "<p>This link was followed at {} ({}); nothing more was done.</p>",
                html_escape(&format_rfc3339(before.timestamp)),
                html_escape(&before.id)
            ),
        ));
    }
    let by = format!("link ({via})");
    let now = chrono::Utc::now().timestamp_millis();
    let note = Some(format!("from a signed link in the {via} message"));
    let mut r = match act {
        LinkAction::Ack => FeedbackRecord::ack(alert_id, &by, now, note),
        LinkAction::Silence => {
            let alert = store::alert(&ctx.client, &ctx.names, alert_id)?;
            let spec = SilenceSpec {
                service: Some(alert.service.clone()),
                provider: Some(alert.provider.clone()),
                route: alert.route.clone(),
                start: Some(now),
                end: Some(now + LINK_SILENCE),
                ..SilenceSpec::default()
            };
            FeedbackRecord::silence(spec, &by, now, note)
        }
        LinkAction::NotAProblem => {
            let (_, findings) = store::alert_with_findings(&ctx.client, &ctx.names, alert_id)?;
            FeedbackRecord::verdict(alert_id, Verdict::FalsePositive, findings, &by, now, note)
        }
    };
    r.id = id;
    if let Err(e) = r.validate() {
        return Ok(page(StatusCode::CONFLICT, "Not done", &html_escape(&e.to_string())));
    }
    store::write(&ctx.client, &ctx.names, &r)?;
    tracing::info!(action = act.as_str(), alert_id, via, feedback_id = %r.id, "an answering link was followed");
    let done = match act {
        LinkAction::Ack => "Acknowledged".to_owned(),
        LinkAction::Silence => format!("Silenced until {}", format_rfc3339(now + LINK_SILENCE)),
        LinkAction::NotAProblem => "Marked not a problem".to_owned(),
    };
    Ok(page(
        StatusCode::OK,
        &done,
        &format!(
            "<p id=\"done\">Alert {}: {} (record {}). Undo with <code>apiwatch {}</code>.</p>",
            html_escape(alert_id),
            html_escape(what_it_does(act)),
            html_escape(&r.id),
            match act {
                LinkAction::Silence => format!("silence --remove {}", html_escape(&r.id)),
                LinkAction::NotAProblem => format!("feedback {} --remove", html_escape(alert_id)),
                LinkAction::Ack => "status".to_owned(),
            }
        ),
    ))
}

/// The link pages' routes.
pub fn routes(ctx: Arc<ApiContext>) -> Router {
    Router::new()
        .route("/act/{action}/{alert}", get(confirm).post(perform))
        .with_state(ctx)
}
