//! String interning: services, providers and routes become small integer symbols so that the hot
//! path hashes integers, not strings.

use rustc_hash::FxHashMap;

/// An interned string.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(pub u32);

/// Maps strings to symbols and back.
#[derive(serde::Serialize, serde::Deserialize, Default, Debug)]
pub struct Interner {
    ids: FxHashMap<Box<str>, Sym>,
    names: Vec<Box<str>>,
}

impl Interner {
    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = Sym(self.names.len() as u32);
        self.names.push(s.into());
        self.ids.insert(s.into(), id);
        id
    }

    /// The symbol of a string already interned.
    pub fn get(&self, s: &str) -> Option<Sym> {
        self.ids.get(s).copied()
    }

    pub fn name(&self, id: Sym) -> &str {
        &self.names[id.0 as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// A fast, stable-within-a-build 64-bit hash of a string: ids of users, traces, spans and
/// documents kept as numbers, and rarity keys.
pub fn hash_str(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    s.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_string_same_symbol() {
        let mut i = Interner::default();
        let a = i.intern("payments");
        let b = i.intern("ledger");
        assert_ne!(a, b);
        assert_eq!(i.intern("payments"), a);
        assert_eq!(i.name(b), "ledger");
        assert_eq!(i.len(), 2);
    }
}
