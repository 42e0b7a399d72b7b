//! What the people on call say back: acknowledgements ("seen, working on it"), silences ("quiet
//! for this maintenance window") and verdicts ("not a problem, learn from it").
//!
//! Records have one shape wherever they come from (the `<prefix>-feedback` index, the CLI, a
//! `detect --feedback` file). Replayed from a file they take effect from their `@timestamp` on
//! the events' clock, so that the same stream with the same feedback gives the same alerts and
//! an evaluation never learns from the future; read by a worker they take effect at once. A
//! silence applies over its own span of event time either way. The [`FeedbackBook`] lives in the
//! alert manager's checkpointed state:
//!
//! - an acknowledged alert is marked (who, when) and not notified again until it resolves;
//! - a silence marks matching alerts with its id: they are written and counted, never sent;
//! - a `false_positive` verdict carries the findings that raised the alert (entity, kind,
//!   detector, score, time of day); findings in the same circumstances — the same entity, kind
//!   and detector, within an hour of the same time of day (routine work recurs on a clock: the
//!   nightly batch, the scheduled probe), up to a learned score — are held back from then on
//!   ([`HELD_BY_VERDICT`]), with the verdicts named in their reason. A `true_positive` on the
//!   same key caps that score below its own findings, and removing a verdict undoes what it
//!   taught (the suppressions are derived from the verdicts in effect).
//!
//! Messages carry signed links to answer from the mail itself ([`link`]); acknowledgements made
//! in PagerDuty come back through its signed webhooks ([`pagerduty`]).

pub mod link;
pub mod pagerduty;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::anomaly::{Alert, Anomaly, AnomalyKind};
use crate::model::time::{format_rfc3339, serde_rfc3339, Millis, DAY_MS};

/// The hold rule of anomalies a false-positive verdict taught apiwatch to keep quiet.
pub const HELD_BY_VERDICT: &str = "learned_false_positive";

/// Findings of one alert a verdict carries (the strongest per entity, kind and detector).
pub const MAX_FINDINGS: usize = 64;

/// Acknowledgements of alerts this long gone are forgotten (bounded state).
const ACK_MEMORY: Millis = 30 * DAY_MS;

/// A learned suppression holds findings within this much of the time of day of a false one.
pub const TIME_OF_DAY_BAND: Millis = crate::model::time::HOUR_MS;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackType {
    Ack,
    Silence,
    Verdict,
}

impl FeedbackType {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackType::Ack => "ack",
            FeedbackType::Silence => "silence",
            FeedbackType::Verdict => "verdict",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    FalsePositive,
    TruePositive,
}

/// One finding behind an alert, as a verdict remembers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    #[serde(rename = "service.name")]
    pub service: String,
    #[serde(rename = "cloud.provider")]
    pub provider: String,
    #[serde(rename = "anomaly.kind")]
    pub kind: AnomalyKind,
    #[serde(rename = "anomaly.detector")]
    pub detector: String,
    #[serde(rename = "anomaly.score")]
    pub score: f64,
    /// When it was found (its window's start).
    #[serde(rename = "@timestamp", with = "serde_rfc3339")]
    pub at: Millis,
}

impl Finding {
    fn key(&self) -> String {
        key(&self.service, &self.provider, self.kind, &self.detector)
    }
}

fn key(service: &str, provider: &str, kind: AnomalyKind, detector: &str) -> String {
    format!("{service}/{provider} {} {detector}", kind.as_str())
}

/// One acknowledgement, silence or verdict. A later record with the same id replaces it;
/// `feedback.removed` withdraws it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    /// When it was given (a silence's span is separate).
    #[serde(rename = "@timestamp", with = "serde_rfc3339")]
    pub timestamp: Millis,
    #[serde(rename = "feedback.id")]
    pub id: String,
    #[serde(rename = "feedback.type")]
    pub kind: FeedbackType,
    /// Who: a person's name, a token's name, or `link` for a signed link.
    #[serde(rename = "user.name")]
    pub by: String,
    #[serde(rename = "feedback.note", skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
    #[serde(rename = "feedback.removed", default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    #[serde(rename = "alert.id", skip_serializing_if = "Option::is_none", default)]
    pub alert_id: Option<String>,
    #[serde(rename = "feedback.verdict", skip_serializing_if = "Option::is_none", default)]
    pub verdict: Option<Verdict>,
    #[serde(rename = "feedback.findings", default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    #[serde(flatten)]
    pub silence: SilenceSpec,
}

/// What a silence matches (every given matcher must match the alert) and when.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SilenceSpec {
    /// The alert's origin service.
    #[serde(rename = "service.name", skip_serializing_if = "Option::is_none", default)]
    pub service: Option<String>,
    #[serde(rename = "cloud.provider", skip_serializing_if = "Option::is_none", default)]
    pub provider: Option<String>,
    #[serde(rename = "http.route", skip_serializing_if = "Option::is_none", default)]
    pub route: Option<String>,
    /// One of the alert's kinds.
    #[serde(rename = "anomaly.kind", skip_serializing_if = "Option::is_none", default)]
    pub kind: Option<AnomalyKind>,
    #[serde(rename = "alert.priority", skip_serializing_if = "Option::is_none", default)]
    pub priority: Option<String>,
    #[serde(
        rename = "silence.start",
        with = "serde_rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub start: Option<Millis>,
    #[serde(
        rename = "silence.end",
        with = "serde_rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub end: Option<Millis>,
}

impl SilenceSpec {
    fn has_matcher(&self) -> bool {
        self.service.is_some() || self.provider.is_some() || self.route.is_some() || self.kind.is_some() || self.priority.is_some()
    }

    /// Whether it holds `a` back at event time `t`.
    pub fn matches(&self, a: &Alert, t: Millis) -> bool {
        let within = self.start.is_none_or(|s| s <= t) && self.end.is_some_and(|e| t < e);
        within
            && self.service.as_ref().is_none_or(|s| *s == a.service)
            && self.provider.as_ref().is_none_or(|p| *p == a.provider)
            && self.route.as_ref().is_none_or(|r| a.route.as_ref() == Some(r))
            && self.kind.is_none_or(|k| a.kinds.contains(&k))
            && self.priority.as_ref().is_none_or(|p| *p == a.priority)
    }

    /// `service=payments kind=latency` for lists and logs.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |name: &str, v: Option<&str>| {
            if let Some(v) = v {
                parts.push(format!("{name}={v}"));
            }
        };
        add("service", self.service.as_deref());
        add("provider", self.provider.as_deref());
        add("route", self.route.as_deref());
        add("kind", self.kind.as_ref().map(AnomalyKind::as_str));
        add("priority", self.priority.as_deref());
        parts.join(" ")
    }
}

/// Why a feedback record cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FeedbackError {
    #[error("feedback {id}: {what}")]
    Invalid { id: String, what: &'static str },
}

impl FeedbackRecord {
    fn base(kind: FeedbackType, by: &str, at: Millis, parts: &[&str]) -> Self {
        let t = format_rfc3339(at);
        let mut id_parts = vec![kind.as_str(), by, t.as_str()];
        id_parts.extend_from_slice(parts);
        FeedbackRecord {
            timestamp: at,
            id: format!("{}-{}", kind.as_str(), &Anomaly::make_id(&id_parts)[..16]),
            kind,
            by: by.to_owned(),
            note: None,
            removed: false,
            alert_id: None,
            verdict: None,
            findings: Vec::new(),
            silence: SilenceSpec::default(),
        }
    }

    pub fn ack(alert_id: &str, by: &str, at: Millis, note: Option<String>) -> Self {
        let mut r = Self::base(FeedbackType::Ack, by, at, &[alert_id]);
        r.alert_id = Some(alert_id.to_owned());
        r.note = note;
        r
    }

    pub fn silence(spec: SilenceSpec, by: &str, at: Millis, reason: Option<String>) -> Self {
        let mut r = Self::base(FeedbackType::Silence, by, at, &[&spec.describe()]);
        r.silence = spec;
        r.note = reason;
        r
    }

    pub fn verdict(alert_id: &str, verdict: Verdict, findings: Vec<Finding>, by: &str, at: Millis, note: Option<String>) -> Self {
        let v = if verdict == Verdict::FalsePositive { "fp" } else { "tp" };
        let mut r = Self::base(FeedbackType::Verdict, by, at, &[alert_id, v]);
        r.alert_id = Some(alert_id.to_owned());
        r.verdict = Some(verdict);
        r.findings = findings;
        r.note = note;
        r
    }

    /// This record withdrawn at `at` (same id, so it replaces the original).
    pub fn withdrawn(&self, by: &str, at: Millis) -> Self {
        FeedbackRecord {
            timestamp: at,
            by: by.to_owned(),
            removed: true,
            ..self.clone()
        }
    }

    /// Refuses a record that could not do what its type says.
    pub fn validate(&self) -> Result<(), FeedbackError> {
        let invalid = |what| Err(FeedbackError::Invalid { id: self.id.clone(), what });
        if self.id.is_empty() {
            return invalid("has no feedback.id");
        }
        if self.removed {
            return Ok(());
        }
        match self.kind {
            FeedbackType::Ack if self.alert_id.is_none() => invalid("an acknowledgement needs alert.id"),
            FeedbackType::Silence if !self.silence.has_matcher() => {
                invalid("a silence needs at least one matcher (service.name, cloud.provider, http.route, anomaly.kind, alert.priority)")
            }
            FeedbackType::Silence if self.silence.end.is_none() => invalid("a silence needs silence.end"),
            FeedbackType::Verdict if self.verdict.is_none() => invalid("a verdict needs feedback.verdict"),
            FeedbackType::Verdict if self.findings.is_empty() && self.verdict == Some(Verdict::FalsePositive) => {
                invalid("a false-positive verdict needs the alert's findings (feedback.findings); give it with `apiwatch feedback`, which reads them")
            }
            _ => Ok(()),
        }
    }
}

/// The findings that raised `alert`: the strongest of its anomalies per entity, kind and
/// detector, strongest first, at most [`MAX_FINDINGS`].
pub fn findings_of<'a>(alert: &Alert, anomalies: impl IntoIterator<Item = &'a Anomaly>) -> Vec<Finding> {
    let ids: std::collections::HashSet<&str> = alert.anomaly_ids.iter().map(String::as_str).collect();
    let mut best: BTreeMap<String, Finding> = BTreeMap::new();
    for a in anomalies {
        if !ids.contains(a.id.as_str()) || a.held_by.is_some() {
            continue;
        }
        let f = Finding {
            service: a.service.clone(),
            provider: a.provider.clone(),
            kind: a.kind,
            detector: a.detector.clone(),
            score: a.score,
            at: a.window_start,
        };
        let e = best.entry(f.key()).or_insert_with(|| f.clone());
        if f.score > e.score {
            *e = f;
        }
    }
    let mut v: Vec<Finding> = best.into_values().collect();
    v.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.key().cmp(&b.key())));
    v.truncate(MAX_FINDINGS);
    v
}

/// What verdicts taught about one entity, kind and detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Suppression {
    pub service: String,
    pub provider: String,
    pub kind: AnomalyKind,
    pub detector: String,
    /// Findings scoring at most this are held back ...
    pub level: f64,
    /// ... within [`TIME_OF_DAY_BAND`] of one of these times of day (ms after midnight UTC).
    pub times_of_day: Vec<Millis>,
    /// The strongest false finding seen, and how many there were.
    pub max_false_score: f64,
    pub false_findings: usize,
    /// The weakest finding of a true-positive verdict on the same key, which caps `level`.
    pub true_floor: Option<f64>,
    /// The verdicts it comes from.
    pub verdicts: Vec<String>,
}

impl Suppression {
    /// Whether event time `t` is within the band of a false finding's time of day.
    pub fn covers(&self, t: Millis) -> bool {
        let tod = t.rem_euclid(DAY_MS);
        self.times_of_day.iter().any(|&f| {
            let d = (tod - f).abs();
            d.min(DAY_MS - d) <= TIME_OF_DAY_BAND
        })
    }
}

/// Counters of what feedback did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedbackCounts {
    /// Records taken into effect, and refused (invalid), over the run.
    pub applied: u64,
    pub refused: u64,
    /// Alert changes marked silenced, and acknowledged.
    pub alerts_silenced: u64,
    pub alerts_acknowledged: u64,
    /// Anomalies held back by a learned suppression.
    pub anomalies_held: u64,
}

/// The feedback in effect, and what it taught (see the module's introduction).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FeedbackBook {
    /// Offered, not yet in effect, with the event time from which it is (by that time).
    pending: Vec<(Millis, FeedbackRecord)>,
    /// In effect, by id.
    current: BTreeMap<String, FeedbackRecord>,
    /// The newest version applied of each id (a record read again changes nothing).
    versions: BTreeMap<String, Millis>,
    /// Derived from the verdicts in `current`, by entity, kind and detector: not saved, rebuilt
    /// at the first window after a restore (`derived` false) and whenever a verdict changes.
    #[serde(skip)]
    suppressions: BTreeMap<String, Suppression>,
    #[serde(skip)]
    derived: bool,
    /// Acknowledgements newly in effect, for alerts to be marked at once.
    #[serde(default)]
    new_acks: Vec<String>,
    pub counts: FeedbackCounts,
}

impl FeedbackBook {
    /// Takes records in: `at_once` (a worker reading the feedback index) at the next window,
    /// otherwise (a replay) once the stream reaches each one's time. Returns the refused ones
    /// with why, which the caller reports.
    pub fn offer(&mut self, records: impl IntoIterator<Item = FeedbackRecord>, at_once: bool) -> Vec<FeedbackError> {
        let mut refused = Vec::new();
        for r in records {
            if let Err(e) = r.validate() {
                self.counts.refused += 1;
                refused.push(e);
                continue;
            }
            let known = self.versions.get(&r.id).is_some_and(|&t| t >= r.timestamp)
                || self.pending.iter().any(|(_, p)| p.id == r.id && p.timestamp == r.timestamp);
            if !known {
                self.pending.push((if at_once { Millis::MIN } else { r.timestamp }, r));
            }
        }
        self.pending
            .sort_by(|(ta, a), (tb, b)| (ta, a.timestamp, &a.id).cmp(&(tb, b.timestamp, &b.id)));
        refused
    }

    /// Puts into effect what is due by event time `now`; forgets expired silences and old
    /// acknowledgements.
    pub fn advance(&mut self, now: Millis) {
        let due = self.pending.partition_point(|(t, _)| *t <= now);
        let mut verdicts_changed = false;
        for (_, r) in self.pending.drain(..due).collect::<Vec<_>>() {
            self.counts.applied += 1;
            self.versions.insert(r.id.clone(), r.timestamp);
            verdicts_changed |= r.kind == FeedbackType::Verdict;
            if r.removed {
                self.current.remove(&r.id);
                continue;
            }
            if r.kind == FeedbackType::Ack {
                self.new_acks.extend(r.alert_id.clone());
            }
            self.current.insert(r.id.clone(), r);
        }
        self.current.retain(|_, r| match r.kind {
            FeedbackType::Silence => r.silence.end.is_some_and(|e| e > now),
            FeedbackType::Ack => now.saturating_sub(r.timestamp) < ACK_MEMORY,
            FeedbackType::Verdict => true,
        });
        self.versions
            .retain(|id, t| self.current.contains_key(id) || now.saturating_sub(*t) < ACK_MEMORY);
        if verdicts_changed || !self.derived {
            self.suppressions = derive_suppressions(self.current.values());
            self.derived = true;
        }
    }

    /// Alerts newly acknowledged since the last call.
    pub fn take_new_acks(&mut self) -> Vec<String> {
        std::mem::take(&mut self.new_acks)
    }

    /// The learned suppression that holds `a` back, if any.
    pub fn suppression_for(&self, a: &Anomaly) -> Option<&Suppression> {
        if self.suppressions.is_empty() {
            return None;
        }
        self.suppressions
            .get(&key(&a.service, &a.provider, a.kind, &a.detector))
            .filter(|s| a.score <= s.level && s.covers(a.window_start))
    }

    /// Marks an alert change with its acknowledgement and the silence that holds it, at event
    /// time `now`, and counts them.
    pub fn annotate(&mut self, alert: &mut Alert, now: Millis) {
        let ack = self
            .current
            .values()
            .filter(|r| r.kind == FeedbackType::Ack && r.alert_id.as_deref() == Some(alert.id.as_str()))
            .max_by_key(|r| r.timestamp);
        if let Some(r) = ack {
            alert.acknowledged_by = Some(r.by.clone());
            alert.acknowledged_at = Some(r.timestamp);
            self.counts.alerts_acknowledged += 1;
        }
        // A resolution is marked too (the document says it was silenced); the notifier still
        // sends it to whoever was told the alert opened.
        let silence = self
            .current
            .values()
            .filter(|r| r.kind == FeedbackType::Silence && r.silence.matches(alert, now))
            .min_by(|a, b| a.id.cmp(&b.id));
        if let Some(r) = silence {
            alert.silenced_by = Some(r.id.clone());
            self.counts.alerts_silenced += 1;
        }
    }

    /// Feedback in effect, by id.
    pub fn current(&self) -> impl Iterator<Item = &FeedbackRecord> {
        self.current.values()
    }

    /// What verdicts taught, by entity, kind and detector.
    pub fn suppressions(&self) -> impl Iterator<Item = &Suppression> {
        self.suppressions.values()
    }
}

/// What is in effect, for `apiwatch status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FeedbackSummary {
    /// Silences in effect: id, what they match, until when, who, why.
    pub silences: Vec<SilenceView>,
    /// Alerts acknowledged (within the last 30 days), and verdicts in effect.
    pub acknowledged: usize,
    pub verdicts: usize,
    /// What the verdicts taught.
    pub learned: Vec<Suppression>,
}

/// One silence in effect.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SilenceView {
    pub id: String,
    pub matches: String,
    pub until: String,
    pub by: String,
    pub reason: Option<String>,
}

impl FeedbackBook {
    /// The book `records` make at `now`, as a worker reading them all would hold it.
    pub fn summary_of(records: Vec<FeedbackRecord>, now: Millis) -> FeedbackSummary {
        let mut book = FeedbackBook::default();
        book.offer(records, true);
        book.advance(now);
        let count = |k: FeedbackType| book.current.values().filter(|r| r.kind == k).count();
        FeedbackSummary {
            silences: book
                .current
                .values()
                .filter(|r| r.kind == FeedbackType::Silence)
                .map(|r| SilenceView {
                    id: r.id.clone(),
                    matches: r.silence.describe(),
                    until: r.silence.end.map(format_rfc3339).unwrap_or_default(),
                    by: r.by.clone(),
                    reason: r.note.clone(),
                })
                .collect(),
            acknowledged: count(FeedbackType::Ack),
            verdicts: count(FeedbackType::Verdict),
            learned: book.suppressions.values().cloned().collect(),
        }
    }
}

/// The suppressions the verdicts in effect teach. A key's level is set in deviation units (the
/// inverse of [`crate::detect::stats::score_from_z`]: scores crowd near 100, deviations do not):
/// up to `1 + 1/n` times the strongest of its `n` false findings — a routine's size varies from
/// day to day, and the margin narrows as verdicts accumulate — and always below any
/// true-positive finding on the same key.
fn derive_suppressions<'a>(records: impl Iterator<Item = &'a FeedbackRecord>) -> BTreeMap<String, Suppression> {
    let mut out: BTreeMap<String, Suppression> = BTreeMap::new();
    let mut true_floor: BTreeMap<String, f64> = BTreeMap::new();
    for r in records.filter(|r| r.kind == FeedbackType::Verdict) {
        for f in &r.findings {
            match r.verdict {
                Some(Verdict::FalsePositive) => {
                    let s = out.entry(f.key()).or_insert_with(|| Suppression {
                        service: f.service.clone(),
                        provider: f.provider.clone(),
                        kind: f.kind,
                        detector: f.detector.clone(),
                        level: 0.0,
                        times_of_day: Vec::new(),
                        max_false_score: 0.0,
                        false_findings: 0,
                        true_floor: None,
                        verdicts: Vec::new(),
                    });
                    s.max_false_score = s.max_false_score.max(f.score);
                    s.false_findings += 1;
                    let tod = f.at.rem_euclid(DAY_MS);
                    if !s.times_of_day.contains(&tod) {
                        s.times_of_day.push(tod);
                        s.times_of_day.sort_unstable();
                    }
                    if !s.verdicts.contains(&r.id) {
                        s.verdicts.push(r.id.clone());
                    }
                }
                Some(Verdict::TruePositive) => {
                    let t = true_floor.entry(f.key()).or_insert(f64::INFINITY);
                    *t = t.min(f.score);
                }
                None => {}
            }
        }
    }
    for (k, s) in &mut out {
        let n = s.false_findings.max(1) as f64;
        let z = crate::detect::stats::z_from_score(s.max_false_score);
        s.level = crate::detect::stats::score_from_z(z * (1.0 + 1.0 / n)).max(s.max_false_score);
        if let Some(&t) = true_floor.get(k) {
            s.true_floor = Some(t);
            s.level = s.level.min(t - 1e-6);
        }
    }
    out.retain(|_, s| s.level > 0.0);
    out
}

/// Reads feedback records from NDJSON (`detect --feedback`); a bad line names its number.
pub fn read_ndjson(path: &std::path::Path) -> anyhow::Result<Vec<FeedbackRecord>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read feedback file {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: FeedbackRecord = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{}: not a feedback record (see shared/spec/outputs.md, Feedback)",
                path.display(),
                i + 1
            )
        })?;
        r.validate().with_context(|| format!("{}:{}", path.display(), i + 1))?;
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::anomaly::AlertStatus;
    use crate::model::time::{HOUR_MS, MINUTE_MS};

    fn anomaly(service: &str, kind: AnomalyKind, detector: &str, score: f64) -> Anomaly {
        let mut a = crate::alert::tests::anomaly(service, kind, score, 0);
        a.detector = detector.into();
        a
    }

    fn finding(service: &str, score: f64) -> Finding {
        Finding {
            service: service.into(),
            provider: "aws".into(),
            kind: AnomalyKind::Latency,
            detector: "baseline".into(),
            score,
            at: 0,
        }
    }

    #[test]
    fn a_false_positive_verdict_holds_the_same_finding_up_to_a_learned_level_and_its_removal_undoes_it() {
        let mut book = FeedbackBook::default();
        let fp = FeedbackRecord::verdict(
            "al-1",
            Verdict::FalsePositive,
            vec![finding("ledger", 70.0)],
            "ana",
            10 * MINUTE_MS,
            None,
        );
        book.offer([fp.clone()], false);
        let a = anomaly("ledger", AnomalyKind::Latency, "baseline", 80.0);
        book.advance(5 * MINUTE_MS);
        assert!(book.suppression_for(&a).is_none(), "not before its time");
        book.advance(10 * MINUTE_MS);
        // One finding at 70 (z ≈ 10.5): held up to twice that deviation (≈ 91).
        let s = book.suppression_for(&a).expect("held");
        assert!((s.level - 91.0).abs() < 0.1, "{s:?}");
        assert!(book
            .suppression_for(&anomaly("ledger", AnomalyKind::Latency, "baseline", 92.0))
            .is_none());
        assert!(book
            .suppression_for(&anomaly("ledger", AnomalyKind::Errors, "baseline", 70.0))
            .is_none());
        assert!(book
            .suppression_for(&anomaly("ledger", AnomalyKind::Latency, "forest", 70.0))
            .is_none());
        // The same finding at another time of day is news.
        let mut afternoon = a.clone();
        afternoon.window_start = 14 * crate::model::time::HOUR_MS;
        assert!(book.suppression_for(&afternoon).is_none());
        let mut next_night = a.clone();
        next_night.window_start = DAY_MS - 30 * MINUTE_MS;
        assert!(book.suppression_for(&next_night).is_some(), "the band wraps around midnight");
        book.offer([fp.withdrawn("ana", 20 * MINUTE_MS)], false);
        book.advance(20 * MINUTE_MS);
        assert!(book.suppression_for(&a).is_none(), "removed verdict undone");
    }

    #[test]
    fn a_restored_book_holds_what_it_held() {
        let mut book = FeedbackBook::default();
        book.offer(
            [FeedbackRecord::verdict(
                "al-1",
                Verdict::FalsePositive,
                vec![finding("ledger", 70.0)],
                "ana",
                0,
                None,
            )],
            false,
        );
        book.advance(0);
        let mut restored: FeedbackBook = rmp_serde::from_slice(&rmp_serde::to_vec_named(&book).unwrap()).unwrap();
        restored.advance(MINUTE_MS);
        let a = anomaly("ledger", AnomalyKind::Latency, "baseline", 80.0);
        assert_eq!(restored.suppression_for(&a), book.suppression_for(&a));
        assert!(restored.suppression_for(&a).is_some());
    }

    #[test]
    fn the_summary_shows_what_is_in_effect_and_what_it_taught() {
        let spec = SilenceSpec {
            service: Some("ledger".into()),
            end: Some(2 * HOUR_MS),
            ..SilenceSpec::default()
        };
        let ended = SilenceSpec {
            end: Some(HOUR_MS / 2),
            ..spec.clone()
        };
        let verdict = FeedbackRecord::verdict("al-1", Verdict::FalsePositive, vec![finding("ledger", 70.0)], "ana", 0, None);
        let records = vec![
            FeedbackRecord::silence(spec, "ops", 0, Some("deploy".into())),
            FeedbackRecord::silence(ended, "ops", 1, None),
            FeedbackRecord::ack("al-2", "bo", 0, None),
            verdict.clone(),
        ];
        let s = FeedbackBook::summary_of(records, HOUR_MS);
        assert_eq!(s.silences.len(), 1, "an ended silence is not in effect: {s:?}");
        assert_eq!(
            (s.silences[0].matches.as_str(), s.silences[0].reason.as_deref()),
            ("service=ledger", Some("deploy"))
        );
        assert_eq!((s.acknowledged, s.verdicts), (1, 1));
        assert_eq!(s.learned.len(), 1);
        assert_eq!(s.learned[0].verdicts, [verdict.id]);
    }

    #[test]
    fn a_true_positive_keeps_the_sensitivity_it_needs() {
        let mut book = FeedbackBook::default();
        book.offer(
            [
                FeedbackRecord::verdict("al-1", Verdict::FalsePositive, vec![finding("ledger", 70.0)], "ana", 0, None),
                FeedbackRecord::verdict("al-2", Verdict::TruePositive, vec![finding("ledger", 78.0)], "ana", 0, None),
            ],
            false,
        );
        book.advance(0);
        assert!(book
            .suppression_for(&anomaly("ledger", AnomalyKind::Latency, "baseline", 77.0))
            .is_some());
        assert!(book
            .suppression_for(&anomaly("ledger", AnomalyKind::Latency, "baseline", 78.0))
            .is_none());
    }

    #[test]
    fn silences_match_their_alerts_within_their_span_and_expire() {
        let mut book = FeedbackBook::default();
        let spec = SilenceSpec {
            service: Some("payments".into()),
            kind: Some(AnomalyKind::Errors),
            start: Some(0),
            end: Some(60 * MINUTE_MS),
            ..SilenceSpec::default()
        };
        let s = FeedbackRecord::silence(spec, "ops", 0, Some("deploy".into()));
        book.offer([s.clone()], false);
        book.advance(MINUTE_MS);
        let mut a = crate::notify::tests::alert("x", "payments", "P2", AlertStatus::Open, 1);
        a.kinds = vec![AnomalyKind::Errors];
        book.annotate(&mut a, 2 * MINUTE_MS);
        assert_eq!(a.silenced_by.as_deref(), Some(s.id.as_str()));
        let mut other = crate::notify::tests::alert("y", "ledger", "P2", AlertStatus::Open, 1);
        other.kinds = vec![AnomalyKind::Errors];
        book.annotate(&mut other, 2 * MINUTE_MS);
        assert_eq!(other.silenced_by, None);
        book.advance(61 * MINUTE_MS);
        let mut later = crate::notify::tests::alert("z", "payments", "P2", AlertStatus::Open, 1);
        later.kinds = vec![AnomalyKind::Errors];
        book.annotate(&mut later, 61 * MINUTE_MS);
        assert_eq!(later.silenced_by, None, "expired");
        assert_eq!(book.counts.alerts_silenced, 1);
        assert_eq!(book.current().count(), 0, "the expired silence is forgotten");
    }

    #[test]
    fn acknowledgements_mark_their_alert_and_a_record_read_twice_counts_once() {
        let mut book = FeedbackBook::default();
        let ack = FeedbackRecord::ack("x", "ana", 5, Some("on it".into()));
        book.offer([ack.clone()], false);
        book.advance(10);
        book.offer([ack], false);
        book.advance(20);
        assert_eq!(book.counts.applied, 1);
        assert_eq!(book.take_new_acks(), vec!["x".to_owned()]);
        let mut a = crate::notify::tests::alert("x", "payments", "P2", AlertStatus::Open, 2);
        book.annotate(&mut a, 20);
        assert_eq!((a.acknowledged_by.as_deref(), a.acknowledged_at), (Some("ana"), Some(5)));
    }

    #[test]
    fn read_live_a_record_applies_at_the_next_window_whatever_its_time() {
        let mut book = FeedbackBook::default();
        let fp = FeedbackRecord::verdict(
            "al-1",
            Verdict::FalsePositive,
            vec![finding("ledger", 70.0)],
            "ana",
            100 * MINUTE_MS,
            None,
        );
        book.offer([fp], true);
        book.advance(MINUTE_MS);
        assert!(book
            .suppression_for(&anomaly("ledger", AnomalyKind::Latency, "baseline", 71.0))
            .is_some());
    }

    #[test]
    fn records_that_cannot_act_are_refused_with_why() {
        let mut book = FeedbackBook::default();
        let mut silence = FeedbackRecord::silence(SilenceSpec::default(), "ops", 0, None);
        silence.silence.end = Some(10);
        let fp = FeedbackRecord::verdict("a", Verdict::FalsePositive, Vec::new(), "ana", 0, None);
        let refused = book.offer([silence, fp], false);
        assert_eq!(refused.len(), 2);
        assert!(refused[0].to_string().contains("matcher"), "{}", refused[0]);
        assert!(refused[1].to_string().contains("findings"), "{}", refused[1]);
        assert_eq!(book.counts.refused, 2);
    }

    #[test]
    fn a_record_round_trips_through_its_document_shape() {
        let spec = SilenceSpec {
            service: Some("payments".into()),
            end: Some(3_600_000),
            ..SilenceSpec::default()
        };
        let r = FeedbackRecord::silence(spec, "ops", 0, Some("maintenance".into()));
        let doc = serde_json::to_value(&r).unwrap();
        assert_eq!(doc["feedback.type"], "silence");
        assert_eq!(doc["service.name"], "payments");
        assert_eq!(doc["silence.end"], "1970-01-01T01:00:00.000Z");
        let back: FeedbackRecord = serde_json::from_value(doc).unwrap();
        assert_eq!(back, r);
    }
}
