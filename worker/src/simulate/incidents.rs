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
    /// A service stops answering altogether: an entry service's clients get nothing (its log
    /// goes silent), an internal one writes nothing and its callers fail at once.
    TotalOutage,
    /// A leaf dependency hangs until its callers' timeout and fails; the wait and the errors
    /// show on every caller up the chain.
    DependencyFailure,
    /// A service fails a share of its calls and its callers retry each failure: its traffic
    /// rises while it fails.
    RetryStorm,
    /// A benign deploy: a service gets faster and a route appears on it (a `/v2` path taking a
    /// share of one route's calls). Must not alert.
    BenignDeploy,
}

/// Which family of scenarios the simulator plans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// One incident of each kind in turn, mid-sized (latency 4-8x, 15-40% errors, 70-90% of
    /// sessions lost), at any hour, 30-60 minutes apart.
    #[default]
    Classic,
    /// Written to differ from the first: total outages, dependency failures that propagate to
    /// callers, retry storms and benign deploys beside the first family's kinds at the floors'
    /// sizes (latency 2-3x, 10-25% errors, 90-99% drops), about a quarter of them at the daily
    /// trough (01:00-05:00 UTC, where chance would put a sixth), 40-150 minutes apart, on
    /// traffic that is lower at weekends.
    Ops,
}

impl IncidentKind {
    /// The kinds the second (ops) family plans in turn (a benign deploy must not alert).
    pub const OPS: [IncidentKind; 10] = [
        IncidentKind::TotalOutage,
        IncidentKind::DependencyFailure,
        IncidentKind::RetryStorm,
        IncidentKind::LatencySpike,
        IncidentKind::ErrorBurst,
        IncidentKind::TrafficDrop,
        IncidentKind::HopSlowdown,
        IncidentKind::CallOrderChange,
        IncidentKind::GradualDegradation,
        IncidentKind::BenignDeploy,
    ];
    /// The kinds the first family plans in turn (all must raise an alert).
    pub const CLASSIC: [IncidentKind; 7] = [
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
    /// The scenario family planned (labels written before families existed are `classic`).
    #[serde(default)]
    pub family: Family,
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
    /// An internal service is down: it writes nothing and its callers' calls fail at once.
    Down {
        service: usize,
    },
    /// A share of a service's calls hang for `after_ms` and fail (504), without calling on.
    Timeout {
        service: usize,
        after_ms: f64,
        rate: f64,
    },
    /// A service fails a share of its calls and its callers retry each failed call up to
    /// `retries` times.
    Retry {
        service: usize,
        rate: f64,
        retries: u32,
    },
    /// A service's durations multiplied by `speedup` (< 1), and a share of one route's calls
    /// going to the same path under `/v2`.
    Deploy {
        service: usize,
        speedup: f64,
        route: usize,
        share: f64,
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

/// Plans the incidents of `family` over `[start, end)`.
pub fn plan(t: &Topology, start: Millis, end: Millis, family: Family, rng: &mut ChaCha8Rng) -> Vec<Scheduled> {
    match family {
        Family::Classic => plan_classic(t, start, end, rng),
        Family::Ops => plan_ops(t, start, end, rng),
    }
}

/// Plans incidents over `[start, end)`: the first 45 minutes are left clean for warm-up, then one
/// incident at a time with quiet gaps between, cycling through every kind.
fn plan_classic(t: &Topology, start: Millis, end: Millis, rng: &mut ChaCha8Rng) -> Vec<Scheduled> {
    let mut out = Vec::new();
    let span = end - start;
    new_services(t, start, span, &mut out);
    let mut kinds = IncidentKind::CLASSIC.to_vec();
    kinds.shuffle(rng);
    let internal = internal_services(t);
    let hops = cross_provider_hops(t);
    let entries: Vec<usize> = (0..t.services.len()).filter(|&i| t.services[i].entry_share > 0.0).collect();
    let mut at = start + 45 * MINUTE_MS + rng.gen_range(0..15) * MINUTE_MS;
    let mut k = 0;
    loop {
        let kind = cycle(&mut kinds, k, rng);
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
            _ => unreachable!("not in CLASSIC"),
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
    number(out)
}

/// The `k`-th kind of a plan that goes through `kinds` in turn, shuffled again after each round.
fn cycle(kinds: &mut [IncidentKind], k: usize, rng: &mut ChaCha8Rng) -> IncidentKind {
    let kind = kinds[k % kinds.len()];
    if k > 0 && k % kinds.len() == 0 {
        kinds.shuffle(rng);
    }
    kind
}

/// Sorts planned incidents by start and numbers their labels in that order.
fn number(mut out: Vec<Scheduled>) -> Vec<Scheduled> {
    out.sort_by_key(|s| s.start);
    for (i, s) in out.iter_mut().enumerate() {
        s.label.id = format!("inc-{:02}", i + 1);
    }
    out
}

/// Internal services all of whose routes call nothing further (leaf dependencies).
fn leaf_services(t: &Topology, internal: &[usize]) -> Vec<usize> {
    internal
        .iter()
        .copied()
        .filter(|&s| t.routes.iter().all(|r| r.service != s || r.calls.is_empty()))
        .collect()
}

/// The first time at or after `at` within 01:00-05:00 UTC (a random minute of that window),
/// unless that is more than half a day away.
fn next_trough(at: Millis, rng: &mut ChaCha8Rng) -> Option<Millis> {
    use crate::model::time::{DAY_MS, HOUR_MS};
    let day = at.div_euclid(DAY_MS) * DAY_MS;
    let mut t = day + HOUR_MS + rng.gen_range(0..240) * MINUTE_MS;
    if t < at {
        t += DAY_MS;
    }
    (t - at <= DAY_MS / 2).then_some(t)
}

/// Where the ops family's incidents can happen in a topology.
struct Pools {
    internal: Vec<usize>,
    leaves: Vec<usize>,
    hops: Vec<(usize, usize)>,
    entries: Vec<usize>,
}

/// A total outage, a hanging dependency or a retry storm: the service, the effect and what
/// happens, in words.
fn failure(t: &Topology, pools: &Pools, kind: IncidentKind, rng: &mut ChaCha8Rng) -> (usize, Effect, String) {
    use IncidentKind as K;
    let svc = |i: usize| (t.services[i].name.to_owned(), t.services[i].provider.to_owned());
    match kind {
        K::TotalOutage => {
            if rng.gen_bool(0.5) {
                let e = *pools.entries.choose(rng).expect("entry services");
                let (n, p) = svc(e);
                (
                    e,
                    Effect::Drop {
                        entry: e,
                        probability: 1.0,
                    },
                    format!("{n}/{p} is down: its clients get no answer"),
                )
            } else {
                let s = *pools.internal.choose(rng).expect("internal services");
                let (n, p) = svc(s);
                (
                    s,
                    Effect::Down { service: s },
                    format!("{n}/{p} is down: it logs nothing and its callers fail"),
                )
            }
        }
        K::DependencyFailure => {
            let s = *pools
                .leaves
                .choose(rng)
                .or_else(|| pools.internal.choose(rng))
                .expect("internal services");
            let after_ms = rng.gen_range(2_000.0..6_000.0);
            let rate = rng.gen_range(0.5..0.9);
            let (n, p) = svc(s);
            let text = format!(
                "dependency {n}/{p} hangs {:.1} s and fails {:.0}% of calls; its callers wait and fail",
                after_ms / 1000.0,
                rate * 100.0
            );
            (
                s,
                Effect::Timeout {
                    service: s,
                    after_ms,
                    rate,
                },
                text,
            )
        }
        K::RetryStorm => {
            let s = *pools.internal.choose(rng).expect("internal services");
            let rate = rng.gen_range(0.2..0.45);
            let (n, p) = svc(s);
            let text = format!(
                "{n}/{p} fails {:.0}% of calls and its callers retry each up to 3 times",
                rate * 100.0
            );
            (
                s,
                Effect::Retry {
                    service: s,
                    rate,
                    retries: 3,
                },
                text,
            )
        }
        _ => unreachable!("not a failure kind"),
    }
}

/// One incident of `kind` over `[at, at + dur)` (a deploy's effect lasts to `run_end`).
fn ops_incident(
    t: &Topology,
    pools: &Pools,
    kind: IncidentKind,
    (at, dur, run_end): (Millis, Millis, Millis),
    rng: &mut ChaCha8Rng,
) -> Scheduled {
    use IncidentKind as K;
    let svc = |i: usize| (t.services[i].name.to_owned(), t.services[i].provider.to_owned());
    let (mut route, mut hop_from, mut breach_at, mut expect_alert, mut effect_end) = (None, None, None, true, at + dur);
    let (s, effect, description) = match kind {
        K::TotalOutage | K::DependencyFailure | K::RetryStorm => failure(t, pools, kind, rng),
        K::LatencySpike => {
            let s = *pools.internal.choose(rng).expect("internal services");
            let factor = rng.gen_range(2.0..3.0);
            let (n, p) = svc(s);
            (s, Effect::Slow { service: s, factor }, format!("{n}/{p} calls {factor:.1}x slower"))
        }
        K::ErrorBurst => {
            let s = *pools.internal.choose(rng).expect("internal services");
            let rate = rng.gen_range(0.1..0.25);
            let (n, p) = svc(s);
            (
                s,
                Effect::Errors { service: s, rate },
                format!("{n}/{p} fails {:.0}% of calls", rate * 100.0),
            )
        }
        K::TrafficDrop => {
            let e = *pools.entries.choose(rng).expect("entry services");
            let probability = rng.gen_range(0.9..0.99);
            let (n, p) = svc(e);
            let text = format!("{n}/{p} loses {:.0}% of its sessions", probability * 100.0);
            (e, Effect::Drop { entry: e, probability }, text)
        }
        K::HopSlowdown => {
            let (a, b) = *pools.hops.choose(rng).expect("cross-provider hops");
            let add_ms = rng.gen_range(80.0..250.0);
            let (from, to) = (svc(a), svc(b));
            hop_from = Some(format!("{}/{}", from.0, from.1));
            let text = format!("network between {}/{} and {}/{} adds {add_ms:.0} ms", from.0, from.1, to.0, to.1);
            (b, Effect::Hop { from: a, to: b, add_ms }, text)
        }
        K::CallOrderChange => {
            let (e, text, skip) = skipped_step(t, &pools.entries, rng);
            let (n, p) = svc(e);
            (e, skip, format!("clients on {n}/{p} {text}"))
        }
        K::GradualDegradation => {
            let (s, breach, ramp) = slow_ramp(&pools.internal, at, dur, rng);
            breach_at = Some(breach);
            let (n, p) = svc(s);
            (s, ramp, format!("{n}/{p} slows down steadily until it breaches 3x its normal p95"))
        }
        K::BenignDeploy => {
            let s = *pools
                .internal
                .iter()
                .chain(&pools.entries)
                .collect::<Vec<_>>()
                .choose(rng)
                .expect("services");
            let routes: Vec<usize> = (0..t.routes.len()).filter(|&r| t.routes[r].service == *s).collect();
            let r = *routes.choose(rng).expect("a service has routes");
            let speedup = rng.gen_range(0.5..0.75);
            let (n, p) = svc(*s);
            route = Some(format!("/v2{}", t.routes[r].path));
            expect_alert = false;
            // A deploy stays; its label covers the half hour after it.
            effect_end = run_end;
            let text = format!(
                "deploy of {n}/{p}: calls {:.0}% faster, a third of {} calls now go to /v2 (benign, not a problem)",
                (1.0 - speedup) * 100.0,
                t.routes[r].path
            );
            (
                *s,
                Effect::Deploy {
                    service: *s,
                    speedup,
                    route: r,
                    share: 0.33,
                },
                text,
            )
        }
        _ => unreachable!("not planned in the ops family"),
    };
    let (name, provider) = svc(s);
    Scheduled {
        label: LabelledIncident {
            id: String::new(),
            kind,
            start: at,
            end: at + dur,
            service: name,
            provider,
            route,
            hop_from,
            breach_at,
            expect_alert,
            description,
        },
        start: at,
        end: effect_end,
        effect: Some(effect),
    }
}

/// The second scenario family (see [`Family::Ops`]): the first 60-90 minutes clean, then one
/// incident at a time cycling through its kinds; a coin flip moves an incident to the next daily
/// trough when that is less than half a day away.
fn plan_ops(t: &Topology, start: Millis, end: Millis, rng: &mut ChaCha8Rng) -> Vec<Scheduled> {
    use IncidentKind as K;
    let mut out = Vec::new();
    new_services(t, start, end - start, &mut out);
    let mut kinds = IncidentKind::OPS.to_vec();
    kinds.shuffle(rng);
    let internal = internal_services(t);
    let pools = Pools {
        leaves: leaf_services(t, &internal),
        internal,
        hops: cross_provider_hops(t),
        entries: (0..t.services.len()).filter(|&i| t.services[i].entry_share > 0.0).collect(),
    };
    let mut at = start + 60 * MINUTE_MS + rng.gen_range(0..30) * MINUTE_MS;
    let mut k = 0;
    loop {
        let kind = cycle(&mut kinds, k, rng);
        let dur = match kind {
            K::GradualDegradation => rng.gen_range(90..=150) * MINUTE_MS,
            K::BenignDeploy => 30 * MINUTE_MS,
            K::TotalOutage => rng.gen_range(5..=30) * MINUTE_MS,
            _ => rng.gen_range(5..=40) * MINUTE_MS,
        };
        if rng.gen_bool(0.5) {
            at = next_trough(at, rng).unwrap_or(at);
        }
        if at + dur + 30 * MINUTE_MS > end {
            break;
        }
        out.push(ops_incident(t, &pools, kind, (at, dur, end), rng));
        at += dur + rng.gen_range(40..=150) * MINUTE_MS;
        k += 1;
    }
    number(out)
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
