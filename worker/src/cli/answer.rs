//! Answering alerts from the command line: acknowledge, silence, and say whether an alert was a
//! problem. Each writes a record to the `<prefix>-feedback` index that every worker reads on its
//! next poll (see [`crate::feedback`]).

use std::path::PathBuf;

use anyhow::Context;

use super::args::{connect, serde_value, EsArgs};
use crate::es::feedback as store;
use crate::feedback::{FeedbackRecord, FeedbackType, SilenceSpec, Verdict};
use crate::model::anomaly::AnomalyKind;
use crate::model::time::{format_rfc3339, Millis};

#[derive(clap::Subcommand)]
pub enum AnswerCommand {
    /// Acknowledge an alert: it is marked with who and when and not notified again until it
    /// resolves (its resolution still is).
    Ack {
        #[command(flatten)]
        es: EsArgs,
        #[arg(long, env = "APIWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// The alert's id (`alert.id`, in every message).
        alert_id: String,
        #[arg(long)]
        note: Option<String>,
        /// Who answers [default: $USER].
        #[arg(long, env = "USER", default_value = "cli")]
        by: String,
    },
    /// Hold back matching alerts from every channel for a while (they are still written, marked
    /// `alert.silence.id`, and counted); `--list` shows the silences, `--remove ID` ends one.
    Silence(SilenceArgs),
    /// Say whether an alert was a problem. `--false-positive` teaches: findings like the ones
    /// that raised it (same service, kind and detector, up to a learned score) are held back
    /// from then on; `--true-positive` keeps their sensitivity; `--remove` takes it back.
    Feedback(VerdictArgs),
}

#[derive(clap::Args)]
pub struct SilenceArgs {
    #[command(flatten)]
    pub es: EsArgs,
    #[arg(long, env = "APIWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// The alert's origin service.
    #[arg(long)]
    pub service: Option<String>,
    #[arg(long)]
    pub provider: Option<String>,
    #[arg(long)]
    pub route: Option<String>,
    /// One of the alert's kinds: latency, errors, traffic, request, sequence, journey, forecast.
    #[arg(long, value_parser = serde_value::<AnomalyKind>)]
    pub kind: Option<AnomalyKind>,
    #[arg(long)]
    pub priority: Option<String>,
    /// How long, e.g. 90m, 2h, 1d.
    #[arg(long = "for", value_parser = parse_span)]
    pub span: Option<Millis>,
    /// When it starts (RFC 3339; a maintenance window ahead, or a past range to backfill)
    /// [default: now].
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long)]
    pub reason: Option<String>,
    /// List the silences (in effect, ahead, or ended; those removed are not listed).
    #[arg(long, conflicts_with_all = ["remove", "service", "provider", "route", "kind", "priority"])]
    pub list: bool,
    /// End this silence now.
    #[arg(long, value_name = "ID")]
    pub remove: Option<String>,
    #[arg(long, env = "USER", default_value = "cli")]
    pub by: String,
}

#[derive(clap::Args)]
pub struct VerdictArgs {
    #[command(flatten)]
    pub es: EsArgs,
    #[arg(long, env = "APIWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    pub alert_id: String,
    #[arg(long, conflicts_with = "true_positive", required_unless_present_any = ["true_positive", "remove"])]
    pub false_positive: bool,
    #[arg(long)]
    pub true_positive: bool,
    /// Take back this alert's verdict.
    #[arg(long, conflicts_with_all = ["false_positive", "true_positive"])]
    pub remove: bool,
    #[arg(long)]
    pub note: Option<String>,
    #[arg(long, env = "USER", default_value = "cli")]
    pub by: String,
}

/// `90m`, `2h`, `1d`, `45s` in milliseconds.
pub fn parse_span(s: &str) -> Result<Millis, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected a number and a unit, e.g. 90m, 2h, 1d"))?;
    let per = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{s}`: the unit must be s, m, h or d")),
    };
    match n.checked_mul(per) {
        Some(v) if v > 0 => Ok(v),
        _ => Err(format!("`{s}`: must be more than zero and less than centuries")),
    }
}

fn now() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// Runs one answering command.
pub fn run(cmd: AnswerCommand) -> anyhow::Result<()> {
    match cmd {
        AnswerCommand::Ack {
            es,
            config,
            alert_id,
            note,
            by,
        } => {
            let (client, settings) = connect(&es.app(config.as_deref(), None)?)?;
            let r = FeedbackRecord::ack(&alert_id, &by, now(), note);
            store::write(&client, &settings.names, &r)?;
            outln!("acknowledged alert {alert_id} as {by} ({}, {})", r.id, settings.names.feedback);
            Ok(())
        }
        AnswerCommand::Silence(args) => silence(args),
        AnswerCommand::Feedback(args) => verdict(args),
    }
}

fn silence(a: SilenceArgs) -> anyhow::Result<()> {
    let (client, settings) = connect(&a.es.app(a.config.as_deref(), None)?)?;
    let names = &settings.names;
    if a.list {
        return list_silences(&client, names);
    }
    if let Some(id) = a.remove {
        let r = store::get(&client, names, &id)?
            .filter(|r| r.kind == FeedbackType::Silence)
            .with_context(|| format!("no silence {id} in {}: `apiwatch silence --list` shows them", names.feedback))?;
        store::write(&client, names, &r.withdrawn(&a.by, now()))?;
        outln!("removed silence {id} ({})", r.silence.describe());
        return Ok(());
    }
    let span = a.span.context("--for is required (e.g. --for 2h): a silence always ends")?;
    let t = now();
    let start = a
        .from
        .as_deref()
        .map(|f| super::args::time_flag("--from", f))
        .transpose()?
        .unwrap_or(t);
    let spec = SilenceSpec {
        service: a.service,
        provider: a.provider,
        route: a.route,
        kind: a.kind,
        priority: a.priority,
        start: Some(start),
        end: Some(start + span),
    };
    let r = FeedbackRecord::silence(spec, &a.by, t, a.reason);
    r.validate()?;
    store::write(&client, names, &r)?;
    outln!(
        "silence {}: {} from {} until {} (remove with `apiwatch silence --remove {}`)",
        r.id,
        r.silence.describe(),
        format_rfc3339(start),
        format_rfc3339(start + span),
        r.id
    );
    Ok(())
}

fn verdict(a: VerdictArgs) -> anyhow::Result<()> {
    let (client, settings) = connect(&a.es.app(a.config.as_deref(), None)?)?;
    let names = &settings.names;
    let alert_id = a.alert_id.as_str();
    if a.remove {
        let read = store::read_since(&client, names, None)?;
        let mine: Vec<&FeedbackRecord> = read
            .records
            .iter()
            .filter(|r| r.kind == FeedbackType::Verdict && !r.removed && r.alert_id.as_deref() == Some(alert_id))
            .collect();
        anyhow::ensure!(!mine.is_empty(), "no verdict on alert {alert_id} in {}", names.feedback);
        for r in mine {
            store::write(&client, names, &r.withdrawn(&a.by, now()))?;
            outln!("removed verdict {} on alert {alert_id}: what it taught is undone", r.id);
        }
        return Ok(());
    }
    let verdict = if a.false_positive {
        Verdict::FalsePositive
    } else {
        Verdict::TruePositive
    };
    let (alert, findings) = store::alert_with_findings(&client, names, alert_id)?;
    anyhow::ensure!(
        !findings.is_empty() || verdict == Verdict::TruePositive,
        "alert {alert_id}'s anomalies are no longer in {} (deleted by retention?): nothing to learn from",
        names.anomalies
    );
    let r = FeedbackRecord::verdict(alert_id, verdict, findings, &a.by, now(), a.note);
    store::write(&client, names, &r)?;
    outln!(
        "{} on alert {alert_id} ({}) recorded as {} with {} finding(s)",
        if a.false_positive { "false positive" } else { "true positive" },
        alert.title,
        r.id,
        r.findings.len()
    );
    for f in &r.findings {
        outln!(
            "  {}/{} {} by {} at score {:.0}",
            f.service,
            f.provider,
            f.kind.as_str(),
            f.detector,
            f.score
        );
    }
    Ok(())
}

fn list_silences(client: &crate::es::EsClient, names: &crate::es::IndexNames) -> anyhow::Result<()> {
    let read = store::read_since(client, names, None)?;
    for e in &read.malformed {
        outln!("skipped: {e}");
    }
    let records = read.records;
    let t = now();
    let mut n = 0;
    for r in records.iter().filter(|r| r.kind == FeedbackType::Silence && !r.removed) {
        let (start, end) = (r.silence.start.unwrap_or(r.timestamp), r.silence.end.unwrap_or(0));
        let state = if end <= t {
            "ended"
        } else if start > t {
            "ahead"
        } else {
            "in effect"
        };
        n += 1;
        outln!(
            "{}  {state}  {}  {} to {}  by {}{}",
            r.id,
            r.silence.describe(),
            format_rfc3339(start),
            format_rfc3339(end),
            r.by,
            r.note.as_ref().map(|n| format!("  ({n})")).unwrap_or_default()
        );
    }
    if n == 0 {
        outln!("no silence in {}", names.feedback);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_a_person_writes_them() {
        assert_eq!(parse_span("90m"), Ok(90 * 60_000));
        assert_eq!(parse_span("2h"), Ok(7_200_000));
        assert_eq!(parse_span("1d"), Ok(86_400_000));
        assert!(parse_span("2").unwrap_err().contains("unit"));
        assert!(parse_span("h").is_err());
        assert!(parse_span("0h").is_err());
        assert!(parse_span("99999999999999999d").is_err());
    }
}
