//! Labelled incidents the simulator injects, and their effects on generated calls.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::topology::Topology;
use crate::model::time::{serde_rfc3339, Millis, MINUTE_MS};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    LatencySpike,
    ErrorBurst,
    HopSlowdown,
    GradualDegradation,
    CallOrderChange,
    TrafficDrop,
    PayloadAnomaly,
    NewService,
    /// Routine behaviour that looks like a problem and is not (a nightly batch, a scheduled
    /// probe), at about the same time every day: must not alert, and an analyst says so once.
    Routine,
}

impl IncidentKind {
    /// Kinds that must raise an alert (a new service must not).
    pub const ALERTING: [IncidentKind; 7] = [
        IncidentKind::LatencySpike,
        IncidentKind::ErrorBurst,
        IncidentKind::HopSlowdown,
        IncidentKind::GradualDegradation,
        IncidentKind::CallOrderChange,
        IncidentKind::TrafficDrop,
        IncidentKind::PayloadAnomaly,
    ];
}

/// One injected incident, as written to the labels file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LabelledIncident {
    pub id: String,
    pub kind: IncidentKind,
    #[serde(with = "serde_rfc3339")]
    pub start: Millis,
    #[serde(with = "serde_rfc3339")]
    pub end: Millis,
    /// The origin an alert should name.
    pub service: String,
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// For hop incidents, the caller `service/provider`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop_from: Option<String>,
    /// For gradual degradation: when p95 crosses 3x its normal level.
    #[serde(default, with = "serde_rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub breach_at: Option<Millis>,
    pub expect_alert: bool,
    pub description: String,
}

/// The labels file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Labels {
    pub seed: u64,
    pub topology: String,
    #[serde(with = "serde_rfc3339")]
    pub start: Millis,
    #[serde(with = "serde_rfc3339")]
    pub end: Millis,
    pub events: u64,
    pub incidents: Vec<LabelledIncident>,
}

/// What an incident does to the calls generated while it is active.
#[derive(Clone, Debug)]
pub enum Effect {
    /// Multiplies whole call durations at a service.
    Slow {
        service: usize,
        factor: f64,
    },
    /// Linear ramp of the duration factor from 1 to `max` over `[start, ramp_end]`.
    Ramp {
        service: usize,
        start: Millis,
        ramp_end: Millis,
        max: f64,
    },
    Errors {
        service: usize,
        rate: f64,
    },
    /// Extra network latency on calls from `from` to `to`.
    Hop {
        from: usize,
        to: usize,
        add_ms: f64,
    },
    /// Sessions on this entry service skip these flow steps (by step name), with probability.
    SkipSteps {
        entry: usize,
        flow: usize,
        skip: Vec<usize>,
        probability: f64,
    },
    /// Sessions on this entry service are lost with probability.
    Drop {
        entry: usize,
        probability: f64,
    },
    /// Response payloads of one route multiplied, for a share of calls.
    Payload {
        route: usize,
        factor: f64,
        share: f64,
    },
}

#[derive(Clone, Debug)]
pub struct Scheduled {
    pub label: LabelledIncident,
    pub start: Millis,
    pub end: Millis,
    pub effect: Option<Effect>,
}

/// Services that receive calls from other services (not entry points, present from the start).
fn internal_services(t: &Topology) -> Vec<usize> {
    (0..t.services.len())
        .filter(|&i| t.services[i].entry_share == 0.0 && t.services[i].appears_at.is_none())
        .filter(|&i| t.routes.iter().any(|r| r.service == i))
        .collect()
}

/// Caller → callee service pairs across providers.
fn cross_provider_hops(t: &Topology) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    for r in &t.routes {
        for &c in &r.calls {
            let (a, b) = (r.service, t.routes[c].service);
            let (sa, sb) = (&t.services[a], &t.services[b]);
            if sa.provider != sb.provider && sb.appears_at.is_none() && !v.contains(&(a, b)) {
                v.push((a, b));
            }
        }
    }
    v
}

/// The new service of the topology, at the fraction of the run it says: labelled, never an
/// alert.
fn new_services(t: &Topology, start: Millis, span: Millis, out: &mut Vec<Scheduled>) {
    for s in &t.services {
        if let Some(f) = s.appears_at {
            let at = start + (span as f64 * f) as Millis;
            out.push(Scheduled {
                label: LabelledIncident {
                    id: format!("inc-{:02}", out.len() + 1),
                    kind: IncidentKind::NewService,
                    start: at,
                    end: at + 30 * MINUTE_MS,
                    service: s.name.to_owned(),
                    provider: s.provider.to_owned(),
                    route: None,
                    hop_from: None,
                    breach_at: None,
                    expect_alert: false,
                    description: format!("new service {}/{} starts receiving calls", s.name, s.provider),
                },
                start: at,
                end: at + 30 * MINUTE_MS,
                effect: None,
            });
        }
    }
}

/// A call-order change: clients of an entry service skip one visible middle step of a flow.
/// Returns the entry, what they skip (for the description) and the effect.
fn skipped_step(t: &Topology, entries: &[usize], rng: &mut ChaCha8Rng) -> (usize, String, Effect) {
    let e = *entries.choose(rng).expect("entry services");
    // A flow with a middle step to skip.
    let flows: Vec<usize> = (0..t.flows.len())
        .filter(|&f| {
            let st = &t.flows[f].steps;
            st.len() >= 4 && (1..st.len() - 1).any(|i| st[i] != st[i - 1] && st[i] != st[i + 1])
        })
        .collect();
    let f = *flows.choose(rng).expect("flows");
    let steps = &t.flows[f].steps;
    // Only a step whose absence shows: skipping one of two identical steps in a row leaves the
    // same call order, an incident nobody could see.
    let visible: Vec<usize> = (1..steps.len() - 1)
        .filter(|&i| steps[i] != steps[i - 1] && steps[i] != steps[i + 1])
        .collect();
    let skip_at = *visible.choose(rng).expect("a flow of four steps or more has a visible middle step");
    let text = format!("skip `{}` in the {} flow", steps[skip_at], t.flows[f].name);
    let effect = Effect::SkipSteps {
        entry: e,
        flow: f,
        skip: vec![skip_at],
        probability: 0.9,
    };
    (e, text, effect)
}

/// A payload anomaly: one route of an internal service returns much larger payloads.
/// Returns the route, the factor and the effect.
fn bigger_payloads(t: &Topology, internal: &[usize], rng: &mut ChaCha8Rng) -> (usize, f64, Effect) {
    let candidates: Vec<usize> = (0..t.routes.len()).filter(|&r| internal.contains(&t.routes[r].service)).collect();
    let r = *candidates.choose(rng).expect("routes");
    let factor = rng.gen_range(12.0..30.0);
    let effect = Effect::Payload {
        route: r,
        factor,
        share: 0.7,
    };
    (r, factor, effect)
}

/// A gradual degradation from `at`: an internal service's durations ramp up for all but the
/// last ten minutes of `dur`. Returns the service, when it breaches 3x and the effect.
fn slow_ramp(internal: &[usize], at: Millis, dur: Millis, rng: &mut ChaCha8Rng) -> (usize, Millis, Effect) {
    let s = *internal.choose(rng).expect("internal services");
    let max = 3.6;
    let ramp = dur - 10 * MINUTE_MS;
    // The duration factor reaches 3 (the limit) at 2/(max-1) of the ramp.
    let breach = at + (ramp as f64 * 2.0 / (max - 1.0)) as Millis;
    let effect = Effect::Ramp {
        service: s,
        start: at,
        ramp_end: at + ramp,
        max,
    };
    (s, breach, effect)
}

/// Plans incidents over `[start, end)`: the first 45 minutes are left clean for warm-up, then one
/// incident at a time with quiet gaps between, cycling through every kind.
pub fn plan(t: &Topology, start: Millis, end: Millis, rng: &mut ChaCha8Rng) -> Vec<Scheduled> {
    let mut out = Vec::new();
    let span = end - start;
    new_services(t, start, span, &mut out);
    let mut kinds = IncidentKind::ALERTING.to_vec();
    kinds.shuffle(rng);
    let internal = internal_services(t);
    let hops = cross_provider_hops(t);
    let entries: Vec<usize> = (0..t.services.len()).filter(|&i| t.services[i].entry_share > 0.0).collect();
    let mut at = start + 45 * MINUTE_MS + rng.gen_range(0..15) * MINUTE_MS;
    let mut k = 0;
    loop {
        let kind = kinds[k % kinds.len()];
        if k > 0 && k % kinds.len() == 0 {
            kinds.shuffle(rng);
        }
        let dur = match kind {
            IncidentKind::GradualDegradation => rng.gen_range(60..=100) * MINUTE_MS,
            _ => rng.gen_range(8..=20) * MINUTE_MS,
        };
        if at + dur + 20 * MINUTE_MS > end {
            break;
        }
        let id = format!("inc-{:02}", out.len() + 1);
        let svc = |i: usize| (t.services[i].name.to_owned(), t.services[i].provider.to_owned());
        let (label_svc, route, hop_from, breach_at, effect, description);
        match kind {
            IncidentKind::LatencySpike => {
                let s = *internal.choose(rng).expect("internal services");
                let factor = rng.gen_range(4.0..8.0);
                label_svc = svc(s);
                (route, hop_from, breach_at) = (None, None, None);
                description = format!("{}/{} calls {factor:.1}x slower", label_svc.0, label_svc.1);
                effect = Effect::Slow { service: s, factor };
            }
            IncidentKind::ErrorBurst => {
                let s = *internal.choose(rng).expect("internal services");
                let rate = rng.gen_range(0.15..0.4);
                label_svc = svc(s);
                (route, hop_from, breach_at) = (None, None, None);
                description = format!("{}/{} fails {:.0}% of calls", label_svc.0, label_svc.1, rate * 100.0);
                effect = Effect::Errors { service: s, rate };
            }
            IncidentKind::HopSlowdown => {
                let (a, b) = *hops.choose(rng).expect("cross-provider hops");
                let add_ms = rng.gen_range(150.0..400.0);
                label_svc = svc(b);
                let from = svc(a);
                hop_from = Some(format!("{}/{}", from.0, from.1));
                (route, breach_at) = (None, None);
                description = format!(
                    "network between {}/{} and {}/{} adds {add_ms:.0} ms",
                    from.0, from.1, label_svc.0, label_svc.1
                );
                effect = Effect::Hop { from: a, to: b, add_ms };
            }
            IncidentKind::GradualDegradation => {
                let (s, breach, ramp) = slow_ramp(&internal, at, dur, rng);
                label_svc = svc(s);
                breach_at = Some(breach);
                (route, hop_from) = (None, None);
                description = format!(
                    "{}/{} slows down steadily until it breaches 3x its normal p95",
                    label_svc.0, label_svc.1
                );
                effect = ramp;
            }
            IncidentKind::CallOrderChange => {
                let (e, text, skip) = skipped_step(t, &entries, rng);
                label_svc = svc(e);
                (route, hop_from, breach_at) = (None, None, None);
                description = format!("clients on {}/{} {text}", label_svc.0, label_svc.1);
                effect = skip;
            }
            IncidentKind::TrafficDrop => {
                let e = *entries.choose(rng).expect("entry services");
                let p = rng.gen_range(0.7..0.9);
                label_svc = svc(e);
                (route, hop_from, breach_at) = (None, None, None);
                description = format!("{}/{} loses {:.0}% of its sessions", label_svc.0, label_svc.1, p * 100.0);
                effect = Effect::Drop { entry: e, probability: p };
            }
            IncidentKind::PayloadAnomaly => {
                let (r, factor, payload) = bigger_payloads(t, &internal, rng);
                label_svc = svc(t.routes[r].service);
                route = Some(t.routes[r].path.to_owned());
                (hop_from, breach_at) = (None, None);
                description = format!(
                    "{}/{} {} returns payloads {factor:.0}x larger",
                    label_svc.0, label_svc.1, t.routes[r].path
                );
                effect = payload;
            }
            IncidentKind::NewService | IncidentKind::Routine => unreachable!("not in ALERTING"),
        }
        out.push(Scheduled {
            label: LabelledIncident {
                id,
                kind,
                start: at,
                end: at + dur,
                service: label_svc.0,
                provider: label_svc.1,
                route,
                hop_from,
                breach_at,
                expect_alert: true,
                description,
            },
            start: at,
            end: at + dur,
            effect: Some(effect),
        });
        at += dur + rng.gen_range(30..=60) * MINUTE_MS;
        k += 1;
    }
    out.sort_by_key(|s| s.start);
    for (i, s) in out.iter_mut().enumerate() {
        s.label.id = format!("inc-{:02}", i + 1);
    }
    out
}

/// Routines of `SimConfig::routines` over `[start, end)`: one internal service slowed by a
/// nightly batch and another failing a share of its calls during a scheduled job (a probe of a
/// retired endpoint), each at about the same time of day, every day. From their own random
/// stream, so the rest of the simulation is the same with or without them.
pub fn routines(t: &Topology, start: Millis, end: Millis, seed: u64) -> Vec<Scheduled> {
    use rand::SeedableRng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0052_4f55_5449_4e45);
    let internal = internal_services(t);
    let mut picks = internal.clone();
    picks.shuffle(&mut rng);
    let (slow, failing) = (picks[0], picks[picks.len().min(2) - 1]);
    let slow_at = rng.gen_range(60..300) * MINUTE_MS;
    let fail_at = rng.gen_range(600..1_080) * MINUTE_MS;
    let factor = rng.gen_range(2.5..3.5);
    let rate = rng.gen_range(0.08..0.15);
    let svc = |i: usize| (t.services[i].name.to_owned(), t.services[i].provider.to_owned());
    let mut out = Vec::new();
    let first_day = start.div_euclid(crate::model::time::DAY_MS) * crate::model::time::DAY_MS;
    let mut day = first_day;
    while day < end {
        for (service, offset, dur, effect, what) in [
            (
                slow,
                slow_at,
                20 * MINUTE_MS,
                Effect::Slow { service: slow, factor },
                format!("nightly batch: calls {factor:.1}x slower (routine, not a problem)"),
            ),
            (
                failing,
                fail_at,
                12 * MINUTE_MS,
                Effect::Errors { service: failing, rate },
                format!(
                    "scheduled probe of a retired endpoint: {:.0}% of calls fail (routine, not a problem)",
                    rate * 100.0
                ),
            ),
        ] {
            let at = day + offset + rng.gen_range(-5..=5) * MINUTE_MS;
            if at < start + 45 * MINUTE_MS || at + dur > end {
                continue;
            }
            let (name, provider) = svc(service);
            out.push(Scheduled {
                label: LabelledIncident {
                    id: format!("routine-{:02}", out.len() + 1),
                    kind: IncidentKind::Routine,
                    start: at,
                    end: at + dur,
                    description: format!("{name}/{provider}: {what}"),
                    service: name,
                    provider,
                    route: None,
                    hop_from: None,
                    breach_at: None,
                    expect_alert: false,
                },
                start: at,
                end: at + dur,
                effect: Some(effect),
            });
        }
        day += crate::model::time::DAY_MS;
    }
    out
}
