//! Onboarding: every service (per provider) and route is registered the first time it is seen,
//! with its first-seen time and how ready its baselines are. Appearance alone is never an alert;
//! the detectors simply start learning the newcomer's baselines, and score it once they can.

use rustc_hash::FxHashMap;

use crate::detect::baseline::MIN_HISTORY;
pub use crate::model::service::{RouteRecord, ServiceRecord};
use crate::model::time::{Millis, DAY_MS};
use crate::model::{Interner, Sym};

/// Windows after which a baseline counts as fully ready.
pub const READY_WINDOWS: u64 = 15;

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Entry {
    first_seen: Millis,
    last_seen: Millis,
    calls: u64,
    windows: u64,
    active_this_window: bool,
    routes: FxHashMap<Sym, (Millis, u64)>,
}

/// The registry of services and routes seen.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct ServiceRegistry {
    entries: FxHashMap<(Sym, Sym), Entry>,
}

/// What readiness a baseline with this many windows of history has.
pub fn readiness(windows: u64, age: Millis) -> &'static str {
    if windows < MIN_HISTORY as u64 {
        "warming"
    } else if windows < READY_WINDOWS {
        "early"
    } else if age >= DAY_MS {
        "seasonal"
    } else {
        "ready"
    }
}

impl ServiceRegistry {
    /// Records a call; returns true when the service (in this provider) is new.
    pub fn record(&mut self, service: Sym, provider: Sym, route: Sym, t: Millis, names: &Interner) -> bool {
        let mut new = false;
        let e = self.entries.entry((service, provider)).or_insert_with(|| {
            new = true;
            Entry {
                first_seen: t,
                last_seen: t,
                ..Default::default()
            }
        });
        if new {
            tracing::info!(
                service = names.name(service),
                provider = names.name(provider),
                "onboarded a new service"
            );
        }
        e.calls += 1;
        e.last_seen = e.last_seen.max(t);
        e.active_this_window = true;
        let r = e.routes.entry(route).or_insert_with(|| {
            if !new {
                tracing::debug!(service = names.name(service), route = names.name(route), "onboarded a new route");
            }
            (t, 0)
        });
        r.1 += 1;
        new
    }

    /// Counts a closed window for every service active in it.
    pub fn close_window(&mut self) {
        for e in self.entries.values_mut() {
            if std::mem::take(&mut e.active_this_window) {
                e.windows += 1;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// When a service (in a provider) was first seen.
    pub fn first_seen(&self, service: Sym, provider: Sym) -> Option<Millis> {
        self.entries.get(&(service, provider)).map(|e| e.first_seen)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn records(&self, names: &Interner) -> Vec<ServiceRecord> {
        let mut v: Vec<ServiceRecord> = self
            .entries
            .iter()
            .map(|(&(s, p), e)| {
                let mut routes: Vec<RouteRecord> = e
                    .routes
                    .iter()
                    .map(|(&r, &(first_seen, calls))| RouteRecord {
                        route: names.name(r).to_owned(),
                        first_seen,
                        calls,
                    })
                    .collect();
                routes.sort_by(|a, b| a.route.cmp(&b.route));
                ServiceRecord {
                    service: names.name(s).to_owned(),
                    provider: names.name(p).to_owned(),
                    first_seen: e.first_seen,
                    last_seen: e.last_seen,
                    calls: e.calls,
                    windows: e.windows,
                    baseline: readiness(e.windows, e.last_seen - e.first_seen).to_owned(),
                    routes,
                }
            })
            .collect();
        v.sort_by(|a, b| (a.first_seen, &a.service, &a.provider).cmp(&(b.first_seen, &b.service, &b.provider)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_routes_are_registered_once() {
        let mut names = Interner::default();
        let (s, p, r1, r2) = (names.intern("a"), names.intern("aws"), names.intern("/x"), names.intern("/y"));
        let mut reg = ServiceRegistry::default();
        assert!(reg.record(s, p, r1, 1000, &names));
        assert!(!reg.record(s, p, r2, 2000, &names));
        assert!(!reg.record(s, p, r1, 3000, &names));
        reg.close_window();
        let recs = reg.records(&names);
        assert_eq!(recs.len(), 1);
        assert_eq!((recs[0].calls, recs[0].windows, recs[0].routes.len()), (3, 1, 2));
        assert_eq!(recs[0].first_seen, 1000);
        assert_eq!(recs[0].baseline, "warming");
    }

    #[test]
    fn readiness_grows_with_history() {
        assert_eq!(readiness(0, 0), "warming");
        assert_eq!(readiness(6, 0), "early");
        assert_eq!(readiness(20, 0), "ready");
        assert_eq!(readiness(2000, 2 * DAY_MS), "seasonal");
    }
}
