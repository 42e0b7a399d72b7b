//! Elasticsearch mode: the same pipeline as file mode, with events read from the log indices and
//! documents written back. `client` speaks HTTP; `templates` installs the mappings; `reader`
//! pages through index ranges with point-in-time + `search_after`; `writer` is the bulk
//! [`ResultSink`](crate::sink::ResultSink) that checks every item; `state` keeps checkpoints,
//! learned state and leases in the state index; `worker` runs `run` and `backfill`;
//! `loader` bulk-loads simulated traffic.

pub mod bench;
pub mod client;
pub mod loader;
pub mod names;
pub mod reader;
pub mod state;
pub mod templates;
pub mod worker;
pub mod writer;

pub use client::{ClientOptions, Credentials, EsClient, EsError};
pub use names::IndexNames;
