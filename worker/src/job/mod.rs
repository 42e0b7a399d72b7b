//! Jobs that run the pipeline end to end: [`files`] reads files or stdin and writes a
//! directory (`apiwatch detect`); the Elasticsearch jobs (`run`, `backfill`) are in
//! [`crate::job::elasticsearch`]. [`partition`] divides a job's partitions among the workers
//! on it; [`partitioned`] runs a job as partitions shared by several workers, with the
//! correlator that groups their anomalies into alerts.

pub mod elasticsearch;
pub mod files;
pub mod partition;
pub mod partitioned;
