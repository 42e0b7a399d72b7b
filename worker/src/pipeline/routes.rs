//! Route templates learned from raw paths: `/accounts/12345678/balance` becomes
//! `/accounts/{id}/balance`. Id-like segments (numbers, UUIDs, hex, long tokens) are replaced at
//! once; a path position whose literal values keep multiplying is learned to be an id too. Both the
//! trie and the number of routes per service are capped, so a flood of random paths costs bounded
//! memory and ends up in one `{id}` or `/{other}` route instead of thousands.

use rustc_hash::FxHashMap;

use crate::model::{Interner, Sym};

/// Limits of the learner.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteLimits {
    /// Distinct literal values one path position may take before it is treated as an id.
    pub max_literals_per_position: usize,
    /// Routes per service; later new templates fold into `/{other}`.
    pub max_routes_per_service: usize,
    /// Trie nodes per service.
    pub max_nodes_per_service: usize,
}

impl Default for RouteLimits {
    fn default() -> Self {
        RouteLimits {
            max_literals_per_position: 48,
            max_routes_per_service: 400,
            max_nodes_per_service: 4096,
        }
    }
}

pub const OTHER_ROUTE: &str = "/{other}";

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Node {
    literals: FxHashMap<Box<str>, u32>,
    wildcard: Option<u32>,
    collapsed: bool,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct ServiceRoutes {
    nodes: Vec<Node>,
    /// Template → route; keyed by the template's trie leaf, so the hot path needs no string.
    by_leaf: FxHashMap<u32, Sym>,
    routes: FxHashMap<Box<str>, Sym>,
}

/// Learns and applies route templates per service.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct RouteLearner {
    limits: RouteLimits,
    services: FxHashMap<Sym, ServiceRoutes>,
    buf: String,
}

/// Whether a path segment is an identifier rather than a resource name.
pub fn looks_like_id(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if digits == b.len() {
        return true;
    }
    if digits >= 3 || seg.contains('@') {
        return true;
    }
    // Long hex or token-like strings (hashes, base64 ids) even with few digits.
    let hex = b.iter().all(|c| c.is_ascii_hexdigit() || *c == b'-');
    (hex && b.len() >= 12) || (b.len() >= 24 && digits > 0)
}

impl RouteLearner {
    pub fn new(limits: RouteLimits) -> Self {
        RouteLearner {
            limits,
            services: FxHashMap::default(),
            buf: String::with_capacity(64),
        }
    }

    /// Number of routes learned for a service.
    pub fn route_count(&self, service: Sym) -> usize {
        self.services.get(&service).map_or(0, |s| s.routes.len())
    }

    /// The route template of `path` for `service`, learning as it goes.
    pub fn template(&mut self, service: Sym, path: &str, names: &mut Interner) -> Sym {
        let limits = self.limits;
        let svc = self.services.entry(service).or_default();
        if svc.nodes.is_empty() {
            svc.nodes.push(Node::default());
        }
        let path = path.split(['?', '#']).next().unwrap_or("");
        self.buf.clear();
        let mut node = 0u32;
        let mut truncated = false;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            self.buf.push('/');
            let id_like = looks_like_id(seg);
            let next = {
                let n = &svc.nodes[node as usize];
                if !id_like && !n.collapsed {
                    n.literals.get(seg).copied()
                } else {
                    None
                }
            };
            let (next, literal) = match next {
                Some(i) => (i, true),
                None => {
                    let can_grow = svc.nodes.len() < limits.max_nodes_per_service;
                    let n = &mut svc.nodes[node as usize];
                    let as_literal = !id_like && !n.collapsed && can_grow && n.literals.len() < limits.max_literals_per_position;
                    if !id_like && !n.collapsed && n.literals.len() >= limits.max_literals_per_position {
                        // Too many distinct values here: this position holds ids.
                        n.collapsed = true;
                    }
                    if as_literal {
                        let i = svc.nodes.len() as u32;
                        svc.nodes[node as usize].literals.insert(seg.into(), i);
                        svc.nodes.push(Node::default());
                        (i, true)
                    } else {
                        match svc.nodes[node as usize].wildcard {
                            Some(i) => (i, false),
                            None if can_grow => {
                                let i = svc.nodes.len() as u32;
                                svc.nodes[node as usize].wildcard = Some(i);
                                svc.nodes.push(Node::default());
                                (i, false)
                            }
                            None => {
                                self.buf.push_str("{id}");
                                truncated = true;
                                break;
                            }
                        }
                    }
                }
            };
            if literal {
                self.buf.push_str(seg);
            } else {
                self.buf.push_str("{id}");
            }
            node = next;
        }
        // The trie node a walk ends on identifies its template (unless the walk was cut short).
        if !truncated {
            if let Some(&sym) = svc.by_leaf.get(&node) {
                return sym;
            }
        }
        if self.buf.is_empty() {
            self.buf.push('/');
        }
        let sym = match svc.routes.get(self.buf.as_str()) {
            Some(&sym) => sym,
            None => {
                let key: &str = if svc.routes.len() >= limits.max_routes_per_service {
                    OTHER_ROUTE
                } else {
                    &self.buf
                };
                match svc.routes.get(key) {
                    Some(&sym) => sym,
                    None => {
                        let sym = names.intern(key);
                        svc.routes.insert(key.into(), sym);
                        sym
                    }
                }
            }
        };
        if !truncated {
            svc.by_leaf.insert(node, sym);
        }
        sym
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learn(paths: &[&str]) -> Vec<String> {
        let mut names = Interner::default();
        let svc = names.intern("svc");
        let mut r = RouteLearner::new(RouteLimits::default());
        paths
            .iter()
            .map(|p| {
                let sym = r.template(svc, p, &mut names);
                names.name(sym).to_owned()
            })
            .collect::<Vec<_>>()
    }

    #[test]
    fn ids_become_placeholders() {
        let got = learn(&[
            "/accounts/12345678/balance",
            "/accounts/550e8400-e29b-41d4-a716-446655440000/balance",
            "/users/u82006968/orders/deadbeefcafe1234?x=1",
            "/api/v1/login",
            "/",
            "",
        ]);
        assert_eq!(
            got,
            [
                "/accounts/{id}/balance",
                "/accounts/{id}/balance",
                "/users/{id}/orders/{id}",
                "/api/v1/login",
                "/",
                "/"
            ]
        );
    }

    #[test]
    fn resource_names_with_few_digits_stay() {
        assert!(!looks_like_id("v1"));
        assert!(!looks_like_id("oauth2"));
        assert!(!looks_like_id("balance"));
        assert!(looks_like_id("ORD-12345"));
        assert!(looks_like_id("a@b.com"));
    }

    #[test]
    fn high_cardinality_positions_are_learned_as_ids() {
        let paths: Vec<String> = (0..200).map(|i| format!("/customers/{}/profile", word(i))).collect();
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let got = learn(&refs);
        assert_eq!(got.last().unwrap(), "/customers/{id}/profile");
    }

    #[test]
    fn random_path_flood_is_bounded() {
        let mut names = Interner::default();
        let svc = names.intern("svc");
        let mut r = RouteLearner::new(RouteLimits::default());
        for i in 0..50_000u64 {
            let p = format!("/{}/{}/{}", word(i), word(i * 7 + 1), word(i * 13 + 2));
            r.template(svc, &p, &mut names);
        }
        assert!(r.route_count(svc) <= RouteLimits::default().max_routes_per_service);
        assert!(r.services[&svc].nodes.len() <= RouteLimits::default().max_nodes_per_service);
        assert!(names.len() < 1_000, "interned {}", names.len());
    }

    /// Letters-only pseudo-random words, so that only cardinality (not digits) makes them ids.
    fn word(mut i: u64) -> String {
        let mut s = String::new();
        i = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for _ in 0..7 {
            s.push((b'a' + (i % 26) as u8) as char);
            i /= 26;
        }
        s
    }
}
