//! Partitions of a job, and how workers on one job divide them.
//!
//! A job (the live worker, or one backfill range) is split into `count` partitions by a stable
//! hash of the entity that owns a detector's state ([`partition_of`]): Java's
//! `String.hashCode` over UTF-16 code units (what a Painless script or a Logstash/Java
//! component computes too), mixed with murmur3's 32-bit finaliser so that names differing in
//! one character spread, then `floorMod count`. A worker reads only its partitions' events:
//! [`crate::es::partition`] lists the key values present, hashes them, and filters by them.
//!
//! Each partition has its own lease (and, kept by the job, its own checkpoint) in the state
//! index, named [`partition_job`]. Workers announce themselves with a heartbeat; each round a
//! worker computes its quota from the live workers it sees (`count / workers`, the first
//! `count % workers` in name order one more), gives up what it holds beyond its quota (the caller
//! checkpoints those first, then [`Coordinator::release`]), renews the rest and claims free or
//! expired partitions up to its quota, starting at an offset of its rank so that workers do not
//! all race for the same partition. Every write is optimistic (`if_seq_no`/`if_primary_term`
//! in Elasticsearch), so two workers never both hold a partition; a lease runs until it
//! expires, so a worker that stopped answering keeps nothing longer than one lease period. The
//! correlator (the one role that needs the whole picture: alerts) is one more lease.
//!
//! The store is the [`LeaseBook`] trait: Elasticsearch in production
//! ([`crate::es::lease::EsLeaseBook`]), memory in the unit tests below.

use std::collections::BTreeSet;

use crate::model::time::Millis;

/// A document's version for optimistic concurrency: `(seq_no, primary_term)`.
pub type Version = (u64, u64);

/// A lease as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLease {
    pub worker: String,
    pub until: Millis,
    pub version: Version,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseBookError {
    #[error(transparent)]
    Es(#[from] crate::es::EsError),
}

/// Where leases and heartbeats are kept.
pub trait LeaseBook {
    /// Says that `worker` works on `job` until `until`.
    fn heartbeat(&self, job: &str, worker: &str, until: Millis) -> Result<(), LeaseBookError>;
    /// The workers that announced themselves on `job`, with their heartbeat's expiry.
    fn members(&self, job: &str) -> Result<Vec<(String, Millis)>, LeaseBookError>;
    /// The leases named, in order (`None`: never taken, or released).
    fn leases(&self, names: &[String]) -> Result<Vec<Option<StoredLease>>, LeaseBookError>;
    /// Writes lease `name` for `worker` until `until` if it is still at `expected` (`None`: if
    /// it does not exist). `false` when another writer moved it first.
    fn write(&self, name: &str, worker: &str, until: Millis, expected: Option<Version>) -> Result<bool, LeaseBookError>;
    /// Deletes lease `name` if it is still at `version`.
    fn remove(&self, name: &str, version: Version) -> Result<(), LeaseBookError>;
    /// Removes `worker`'s heartbeat on `job`.
    fn leave(&self, job: &str, worker: &str) -> Result<(), LeaseBookError>;
}

/// Murmur3's 32-bit finaliser: every input bit affects every output bit.
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// The partition (of `count`) that `key` belongs to. An absent key is the empty string.
pub fn partition_of(key: &str, count: u32) -> u32 {
    // Java's String.hashCode: s[0]*31^(n-1) + ... over UTF-16 code units, wrapping.
    let java = key
        .encode_utf16()
        .fold(0u32, |h, unit| h.wrapping_mul(31).wrapping_add(u32::from(unit)));
    let mixed = fmix32(java) as i32;
    // Math.floorMod(int, int).
    mixed.rem_euclid(count.max(1) as i32) as u32
}

/// The name under which partition `index` of `count` of `job` keeps its lease and checkpoint.
pub fn partition_job(job: &str, index: u32, count: u32) -> String {
    format!("{job}~p{index}of{count}")
}

/// The name of `job`'s correlator lease.
pub fn correlator_job(job: &str) -> String {
    format!("{job}~correlator")
}

/// What a stored job name says: `(job, Some((index, count)))` for a partition, `(job, None)`
/// for a whole job or a correlator (whose base job is returned too).
pub fn parse_job(name: &str) -> (&str, Option<(u32, u32)>) {
    let Some((base, part)) = name.rsplit_once('~') else {
        return (name, None);
    };
    if part == "correlator" {
        return (base, None);
    }
    let parsed = part
        .strip_prefix('p')
        .and_then(|p| p.split_once("of"))
        .and_then(|(i, n)| Some((i.parse().ok()?, n.parse().ok()?)))
        .filter(|&(i, n): &(u32, u32)| i < n);
    match parsed {
        Some(p) => (base, Some(p)),
        None => (name, None),
    }
}

/// A worker's share after a round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assignment {
    /// Partitions this worker holds a lease on now (gained ones included).
    pub held: BTreeSet<u32>,
    /// Taken this round: load their checkpoints.
    pub gained: Vec<u32>,
    /// Held before, now another worker's (its lease ran out before this worker renewed): stop
    /// writing them at once, their checkpoints belong to the new holder.
    pub lost: Vec<u32>,
    /// Held beyond this worker's quota: checkpoint them, then [`Coordinator::release`].
    pub surplus: Vec<u32>,
    /// Whether this worker holds the correlator lease.
    pub correlator: bool,
    /// The live workers seen, in name order.
    pub workers: Vec<String>,
}

/// One worker's side of dividing a job's partitions.
pub struct Coordinator<B: LeaseBook> {
    book: B,
    job: String,
    worker: String,
    count: u32,
    ttl: Millis,
    /// What this worker held after its last round.
    held: BTreeSet<u32>,
}

impl<B: LeaseBook> Coordinator<B> {
    pub fn new(book: B, job: &str, worker: &str, count: u32, ttl: Millis) -> Self {
        Coordinator {
            book,
            job: job.to_owned(),
            worker: worker.to_owned(),
            count: count.max(1),
            ttl,
            held: BTreeSet::new(),
        }
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = (0..self.count).map(|i| partition_job(&self.job, i, self.count)).collect();
        names.push(correlator_job(&self.job));
        names
    }

    /// Heartbeats, renews, sheds and claims, as of `now` (renew at least every third of the
    /// lease period).
    pub fn round(&mut self, now: Millis) -> Result<Assignment, LeaseBookError> {
        let until = now + self.ttl;
        self.book.heartbeat(&self.job, &self.worker, until)?;
        let mut workers: Vec<String> = self
            .book
            .members(&self.job)?
            .into_iter()
            .filter(|(_, u)| *u > now)
            .map(|(w, _)| w)
            .collect();
        if !workers.contains(&self.worker) {
            workers.push(self.worker.clone());
        }
        workers.sort();
        workers.dedup();
        let rank = workers.iter().position(|w| *w == self.worker).unwrap_or(0) as u32;
        // Never zero: this worker is among them.
        let live = workers.len() as u32;
        let quota = self.count / live + u32::from(rank < self.count % live);

        let names = self.names();
        let stored = self.book.leases(&names)?;
        let mut out = Assignment {
            workers,
            ..Default::default()
        };
        // Renew what is still this worker's; what another worker holds now is lost.
        let mut mine = Vec::new();
        for i in self.held.clone() {
            match &stored[i as usize] {
                Some(l) if l.worker == self.worker => mine.push((i, l.version)),
                _ => out.lost.push(i),
            }
        }
        for (i, version) in mine {
            if self.book.write(&names[i as usize], &self.worker, until, Some(version))? {
                out.held.insert(i);
            } else {
                out.lost.push(i);
            }
        }
        // Beyond the quota: the highest-numbered go (the caller checkpoints, then releases).
        let excess = out.held.len().saturating_sub(quota as usize);
        out.surplus = out.held.iter().rev().take(excess).copied().collect();
        // Claim free or expired partitions up to the quota, from an offset of this worker's rank.
        let start = rank * self.count / live;
        for k in 0..self.count {
            if out.held.len() >= quota as usize {
                break;
            }
            let i = (start + k) % self.count;
            if out.held.contains(&i) {
                continue;
            }
            let expected = match &stored[i as usize] {
                None => None,
                // Run out, or this worker's own from before a restart (same `--worker-id`).
                Some(l) if l.until <= now || l.worker == self.worker => Some(l.version),
                Some(_) => continue,
            };
            if self.book.write(&names[i as usize], &self.worker, until, expected)? {
                out.held.insert(i);
                out.gained.push(i);
            }
        }
        // The correlator: renewed by its holder, taken by anyone once it is free or ran out.
        let c = self.count as usize;
        out.correlator = match &stored[c] {
            Some(l) if l.worker == self.worker => self.book.write(&names[c], &self.worker, until, Some(l.version))?,
            Some(l) if l.until > now => false,
            other => {
                let expected = other.as_ref().map(|l| l.version);
                self.book.write(&names[c], &self.worker, until, expected)?
            }
        };
        out.lost.sort_unstable();
        self.held = out.held.clone();
        Ok(out)
    }

    /// Gives partition `index` up (after checkpointing it) so another worker can take it at once.
    pub fn release(&mut self, index: u32) -> Result<(), LeaseBookError> {
        let name = partition_job(&self.job, index, self.count);
        self.release_named(&name)?;
        self.held.remove(&index);
        Ok(())
    }

    fn release_named(&self, name: &str) -> Result<(), LeaseBookError> {
        if let Some(Some(l)) = self.book.leases(&[name.to_owned()])?.pop() {
            if l.worker == self.worker {
                self.book.remove(name, l.version)?;
            }
        }
        Ok(())
    }

    /// On a clean stop (SIGTERM): every lease this worker holds and its heartbeat go at once.
    pub fn leave(&mut self) -> Result<(), LeaseBookError> {
        for i in std::mem::take(&mut self.held) {
            self.release_named(&partition_job(&self.job, i, self.count))?;
        }
        self.release_named(&correlator_job(&self.job))?;
        self.book.leave(&self.job, &self.worker)
    }
}

#[cfg(test)]
pub(crate) mod memory {
    //! A [`LeaseBook`] in memory, with the same compare-and-set rules as Elasticsearch's.

    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Default, Clone)]
    pub struct MemoryBook {
        inner: Arc<Mutex<Inner>>,
    }

    #[derive(Default)]
    struct Inner {
        leases: BTreeMap<String, StoredLease>,
        members: BTreeMap<(String, String), Millis>,
        seq: u64,
    }

    impl LeaseBook for MemoryBook {
        fn heartbeat(&self, job: &str, worker: &str, until: Millis) -> Result<(), LeaseBookError> {
            self.inner.lock().unwrap().members.insert((job.into(), worker.into()), until);
            Ok(())
        }
        fn members(&self, job: &str) -> Result<Vec<(String, Millis)>, LeaseBookError> {
            let g = self.inner.lock().unwrap();
            Ok(g.members
                .iter()
                .filter(|((j, _), _)| j == job)
                .map(|((_, w), u)| (w.clone(), *u))
                .collect())
        }
        fn leases(&self, names: &[String]) -> Result<Vec<Option<StoredLease>>, LeaseBookError> {
            let g = self.inner.lock().unwrap();
            Ok(names.iter().map(|n| g.leases.get(n).cloned()).collect())
        }
        fn write(&self, name: &str, worker: &str, until: Millis, expected: Option<Version>) -> Result<bool, LeaseBookError> {
            let mut g = self.inner.lock().unwrap();
            if g.leases.get(name).map(|l| l.version) != expected {
                return Ok(false);
            }
            g.seq += 1;
            let version = (g.seq, 1);
            g.leases.insert(
                name.into(),
                StoredLease {
                    worker: worker.into(),
                    until,
                    version,
                },
            );
            Ok(true)
        }
        fn remove(&self, name: &str, version: Version) -> Result<(), LeaseBookError> {
            let mut g = self.inner.lock().unwrap();
            if g.leases.get(name).map(|l| l.version) == Some(version) {
                g.leases.remove(name);
            }
            Ok(())
        }
        fn leave(&self, job: &str, worker: &str) -> Result<(), LeaseBookError> {
            self.inner.lock().unwrap().members.remove(&(job.into(), worker.into()));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryBook;
    use super::*;

    const TTL: Millis = 120_000;

    #[test]
    fn the_hash_is_javas_string_hash_code_mixed() {
        // Java (jshell): "gateway".hashCode() == -189118908.
        let java = "gateway"
            .encode_utf16()
            .fold(0u32, |h, u| h.wrapping_mul(31).wrapping_add(u32::from(u)));
        assert_eq!(java as i32, -189_118_908);
        // jshell: h ^= h >>> 16; h *= 0x85ebca6b; h ^= h >>> 13; h *= 0xc2b2ae35; h ^= h >>> 16;
        // Math.floorMod(h, 16) == 10.
        assert_eq!(partition_of("gateway", 16), 10);
        assert_eq!(partition_of("", 7), 0, "an absent key is partition 0 (fmix32(0) = 0)");
        // Stable, in range, and spread: 1,000 similar names over 8 partitions, none empty or
        // more than twice its share.
        let mut counts = [0u32; 8];
        for i in 0..1000 {
            let p = partition_of(&format!("svc-{i}"), 8);
            assert_eq!(p, partition_of(&format!("svc-{i}"), 8));
            counts[p as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 60 && c < 250), "{counts:?}");
        // Code units, not bytes or chars: a name outside the BMP hashes its surrogate pair.
        assert_ne!(partition_of("zahlung-€", 1 << 30), partition_of("zahlung-e", 1 << 30));
    }

    #[test]
    fn partition_names_read_back() {
        assert_eq!(parse_job(&partition_job("live", 3, 16)), ("live", Some((3, 16))));
        assert_eq!(parse_job(&correlator_job("live")), ("live", None));
        assert_eq!(
            parse_job("backfill-2026-03-01T00:00:00.000Z-2026-03-01T04:00:00.000Z"),
            ("backfill-2026-03-01T00:00:00.000Z-2026-03-01T04:00:00.000Z", None)
        );
        assert_eq!(
            parse_job("odd~p9of4"),
            ("odd~p9of4", None),
            "an index beyond the count is not a partition"
        );
    }

    fn shares(cs: &mut [Coordinator<MemoryBook>], now: Millis) -> Vec<Assignment> {
        cs.iter_mut().map(|c| c.round(now).unwrap()).collect()
    }

    /// Held sets are disjoint and cover all partitions; sizes differ by at most one.
    fn assert_even(a: &[Assignment], count: u32) {
        let mut all = BTreeSet::new();
        for x in a {
            for &p in &x.held {
                assert!(all.insert(p), "partition {p} held twice: {a:?}");
            }
        }
        assert_eq!(all.len() as u32, count, "{a:?}");
        let sizes: Vec<usize> = a.iter().map(|x| x.held.len()).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        assert_eq!(a.iter().filter(|x| x.correlator).count(), 1, "one correlator: {a:?}");
    }

    /// Rounds with each worker releasing its surplus, as the job does after checkpointing.
    fn settle(cs: &mut [Coordinator<MemoryBook>], now: Millis) -> Vec<Assignment> {
        for _ in 0..4 {
            let a = shares(cs, now);
            for (c, x) in cs.iter_mut().zip(&a) {
                for &p in &x.surplus {
                    c.release(p).unwrap();
                }
            }
        }
        shares(cs, now)
    }

    #[test]
    fn workers_divide_partitions_evenly_and_rebalance_when_one_joins_or_leaves() {
        let book = MemoryBook::default();
        let mut cs: Vec<_> = ["w-b", "w-a", "w-c"]
            .iter()
            .map(|w| Coordinator::new(book.clone(), "live", w, 16, TTL))
            .collect();
        // The first round: whoever comes first takes its quota of the workers it has seen so
        // far, later ones what is left; a few rounds later the share is even.
        let a = settle(&mut cs, 1_000);
        assert_even(&a, 16);
        let before: Vec<BTreeSet<u32>> = a.iter().map(|x| x.held.clone()).collect();

        // A fourth joins: the others shed to their new quota and it takes a share.
        cs.push(Coordinator::new(book.clone(), "live", "w-d", 16, TTL));
        let a = settle(&mut cs, 2_000);
        assert_even(&a, 16);
        assert_eq!(a[3].held.len(), 4);
        // Sticky: every earlier worker kept partitions it had (only its surplus moved).
        for (b, x) in before.iter().zip(&a) {
            assert!(x.held.is_subset(b), "{b:?} -> {:?}", x.held);
        }

        // One leaves cleanly: its partitions are free at once, the others take them.
        let mut gone = cs.remove(1);
        gone.leave().unwrap();
        let a = settle(&mut cs, 3_000);
        assert_even(&a, 16);
    }

    #[test]
    fn a_silent_workers_partitions_are_taken_once_its_lease_runs_out_and_it_learns_it_lost_them() {
        let book = MemoryBook::default();
        let mut cs: Vec<_> = ["a", "b"]
            .iter()
            .map(|w| Coordinator::new(book.clone(), "job", w, 6, TTL))
            .collect();
        let a = settle(&mut cs, 0);
        assert_even(&a, 6);
        let of_b = a[1].held.clone();
        // b stops renewing. Within its lease nothing moves; a stays at its quota of two workers.
        let mut a_only = vec![cs.remove(0)];
        let x = a_only[0].round(TTL - 1).unwrap();
        assert_eq!(x.held.len(), 3);
        assert!(x.gained.is_empty());
        // After its lease ran out, a takes everything.
        let x = a_only[0].round(TTL + 1).unwrap();
        assert_eq!(x.held.len(), 6, "{x:?}");
        assert_eq!(x.gained.iter().copied().collect::<BTreeSet<_>>(), of_b);
        // b wakes up: what it held is another's; it is told, and holds nothing it did not win.
        let mut b = cs.remove(0);
        let y = b.round(TTL + 2).unwrap();
        assert_eq!(y.lost.iter().copied().collect::<BTreeSet<_>>(), of_b);
        assert!(y.held.is_empty() && !y.correlator, "{y:?}");
        // ... and from then on, a sheds half to it.
        let mut both = a_only;
        both.push(b);
        let a = settle(&mut both, TTL + 3);
        assert_even(&a, 6);
    }

    #[test]
    fn one_worker_alone_holds_every_partition_and_the_correlator() {
        let mut c = Coordinator::new(MemoryBook::default(), "backfill-x", "solo", 4, TTL);
        let a = c.round(0).unwrap();
        assert_eq!(a.held.len(), 4);
        assert_eq!(a.gained, vec![0, 1, 2, 3]);
        assert!(a.correlator && a.surplus.is_empty() && a.lost.is_empty());
        let a = c.round(10).unwrap();
        assert!(a.gained.is_empty() && a.held.len() == 4 && a.correlator);
        // Restarted under the same id, it takes its own leases back at once (not after they
        // run out); another id waits for them.
        let book = c.book;
        let mut other = Coordinator::new(book.clone(), "backfill-x", "stranger", 4, TTL);
        assert!(other.round(20).unwrap().held.is_empty());
        other.leave().unwrap();
        let mut again = Coordinator::new(book, "backfill-x", "solo", 4, TTL);
        let a = again.round(30).unwrap();
        assert_eq!((a.held.len(), a.gained.len()), (4, 4), "{a:?}");
        assert!(a.correlator);
    }
}
