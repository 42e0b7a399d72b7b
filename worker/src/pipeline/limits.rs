//! Bounded cardinality: how many services, providers, user sessions and open journeys a run
//! follows (`[limits]`). Memory grows with the entities a run holds, so a log with a new
//! `service.name` on every line (a bug upstream, or hostile input) must not grow it without
//! bound. At the cap, new services and providers are folded into one entity named
//! [`OTHER`]: their calls are still counted and judged together, counted as folded, and
//! warned about once. Sessions and journeys beyond their caps are not followed (each detector
//! counts what it left out) until older ones end.

use rustc_hash::FxHashSet;

use crate::model::{Interner, Sym};

/// The name that services or providers beyond their cap are folded into.
pub const OTHER: &str = "(other)";

/// The caps (`[limits]` in the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntityLimits {
    pub max_services: usize,
    pub max_providers: usize,
    pub max_sessions: usize,
    pub max_open_journeys: usize,
}

impl Default for EntityLimits {
    fn default() -> Self {
        EntityLimits {
            max_services: 10_000,
            max_providers: 64,
            max_sessions: 500_000,
            max_open_journeys: 200_000,
        }
    }
}

/// What was folded into [`OTHER`], for the summary.
#[derive(serde::Serialize, serde::Deserialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct Folded {
    /// Calls whose service was beyond `max_services`.
    pub service_calls: u64,
    /// Calls whose provider was beyond `max_providers`.
    pub provider_calls: u64,
    /// The first service name folded, as an example.
    pub first_service: Option<String>,
    pub first_provider: Option<String>,
}

/// The services and providers a run follows.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct EntityNames {
    services: FxHashSet<Sym>,
    providers: FxHashSet<Sym>,
    pub folded: Folded,
}

impl EntityNames {
    /// The symbol for a call's service: its own while under the cap, else [`OTHER`].
    pub fn service(&mut self, name: &str, names: &mut Interner, limits: &EntityLimits) -> Sym {
        match Self::admit(&mut self.services, name, names, limits.max_services) {
            Some(sym) => sym,
            None => {
                if self.folded.first_service.is_none() {
                    tracing::warn!(
                        max = limits.max_services,
                        first = name,
                        "services reached limits.max_services: new services are folded into `{OTHER}` (counted)"
                    );
                    self.folded.first_service = Some(name.to_owned());
                }
                self.folded.service_calls += 1;
                names.intern(OTHER)
            }
        }
    }

    /// The symbol for a call's provider: its own while under the cap, else [`OTHER`].
    pub fn provider(&mut self, name: &str, names: &mut Interner, limits: &EntityLimits) -> Sym {
        match Self::admit(&mut self.providers, name, names, limits.max_providers) {
            Some(sym) => sym,
            None => {
                if self.folded.first_provider.is_none() {
                    tracing::warn!(
                        max = limits.max_providers,
                        first = name,
                        "providers reached limits.max_providers: new providers are folded into `{OTHER}` (counted)"
                    );
                    self.folded.first_provider = Some(name.to_owned());
                }
                self.folded.provider_calls += 1;
                names.intern(OTHER)
            }
        }
    }

    fn admit(known: &mut FxHashSet<Sym>, name: &str, names: &mut Interner, cap: usize) -> Option<Sym> {
        if let Some(sym) = names.get(name).filter(|s| known.contains(s)) {
            return Some(sym);
        }
        if known.len() >= cap {
            return None;
        }
        let sym = names.intern(name);
        known.insert(sym);
        Some(sym)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_beyond_the_cap_fold_into_other_and_are_counted() {
        let limits = EntityLimits {
            max_services: 3,
            ..Default::default()
        };
        let (mut e, mut names) = (EntityNames::default(), Interner::default());
        let syms: Vec<Sym> = ["a", "b", "c", "d", "a", "e", "c"]
            .iter()
            .map(|n| e.service(n, &mut names, &limits))
            .collect();
        let shown: Vec<&str> = syms.iter().map(|s| names.name(*s)).collect();
        assert_eq!(shown, ["a", "b", "c", OTHER, "a", OTHER, "c"]);
        assert_eq!(e.folded.service_calls, 2);
        assert_eq!(e.folded.first_service.as_deref(), Some("d"));
        // The folded names were never interned: memory does not follow them.
        assert_eq!(names.get("e"), None);
    }
}
