//! Jobs that run the pipeline end to end: [`files`] reads files or stdin and writes a
//! directory (`apiwatch detect`); the Elasticsearch jobs (`run`, `backfill`) are in
//! [`crate::job::elasticsearch`]. [`partition`] divides a job's partitions among the workers
//! on it.

pub mod elasticsearch;
pub mod files;
pub mod partition;
