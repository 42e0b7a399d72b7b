//! What Elasticsearch mode shares: `client` speaks HTTP (with the shared retry policy);
//! `names` are the indices; `templates` installs the mappings; `state` keeps checkpoints, learned
//! state and leases in the state index; `lease` keeps partition leases and worker heartbeats there;
//! `partition` builds the query that reads one partition's events; `status` reads them all back for `apiwatch status`; `loader` bulk-loads simulated traffic; `bench` measures.
//! The roles live with their kind: the point-in-time reader is a source
//! ([`crate::source::elasticsearch`]), the bulk writer a sink ([`crate::sink::elasticsearch`]),
//! and `run` / `backfill` a job ([`crate::job::elasticsearch`]).

pub mod bench;
pub mod client;
pub mod feedback;
pub mod lease;
pub mod loader;
pub mod names;
pub mod partition;
pub mod state;
pub mod status;
pub mod templates;

pub use client::{ClientOptions, Credentials, EsClient, EsError};
pub use names::IndexNames;
