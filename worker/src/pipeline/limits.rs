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
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// One cap, named for messages.
struct Cap {
    max: usize,
    what: &'static str,
    key: &'static str,
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
        let cap = Cap {
            max: limits.max_services,
            what: "services",
            key: "limits.max_services",
        };
        Self::admit_or_fold(
            &mut self.services,
            (&mut self.folded.service_calls, &mut self.folded.first_service),
            name,
            names,
            cap,
        )
    }

    /// The symbol for a call's provider: its own while under the cap, else [`OTHER`].
    pub fn provider(&mut self, name: &str, names: &mut Interner, limits: &EntityLimits) -> Sym {
        let cap = Cap {
            max: limits.max_providers,
            what: "providers",
            key: "limits.max_providers",
        };
        Self::admit_or_fold(
            &mut self.providers,
            (&mut self.folded.provider_calls, &mut self.folded.first_provider),
            name,
            names,
            cap,
        )
    }

    /// `name`'s own symbol while `known` is under its cap; else [`OTHER`], counted (and the
    /// first folded name kept and warned about).
    fn admit_or_fold(
        known: &mut FxHashSet<Sym>,
        (calls, first): (&mut u64, &mut Option<String>),
        name: &str,
        names: &mut Interner,
        cap: Cap,
    ) -> Sym {
        if let Some(sym) = Self::admit(known, name, names, cap.max) {
            return sym;
        }
        if first.is_none() {
            tracing::warn!(
                max = cap.max,
                first = name,
                "{} reached {}: new ones are folded into `{OTHER}` (counted)",
                cap.what,
                cap.key
            );
            *first = Some(name.to_owned());
        }
        *calls += 1;
        names.intern(OTHER)
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
