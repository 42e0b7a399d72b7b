//! apiwatch: AI-powered monitoring of API calls for teams that run the Elastic stack.
//!
//! # Layout
//! - [`model`]: events, entities, windows, anomaly, alert and service documents, the request
//!   feature contract, time and hashing (imports nothing of ours but itself).
//! - [`source`]: where events come from, behind [`source::EventSource`]: files and stdin (the
//!   JSON reader, access logs, read-ahead, clock-skew guard) and the Elasticsearch point-in-time
//!   reader; [`sink`]: where results go, behind [`sink::ResultSink`]: files, memory, the
//!   Elasticsearch bulk writer.
//! - [`pipeline`]: the window loop, one code path whatever the source: reordering, route
//!   learning and enrichment, windows, the saved state and its [`pipeline::StateKey`].
//! - [`detect`]: baselines, sequential tests, isolation forests, sequences, journeys, forecasts,
//!   pattern memory, the learned models; each behind the [`detect::Detector`] trait.
//! - [`alert`]: grouping anomalies into alerts, suspects ranked by blame, priority, rendering.
//! - [`job`]: the pipeline end to end: on files (`detect`), and the Elasticsearch `run` and
//!   `backfill` loop with its checkpoints and leases.
//! - [`es`]: what Elasticsearch mode shares: client, index names, templates and `setup`, the
//!   state store (checkpoints, leases), the simulated-traffic loader, its benchmark.
//! - [`notify`]: who is told about which alert and how often: one [`notify::dispatch::Dispatcher`]
//!   per channel behind [`notify::dispatch::Channel`] (email, webhook, PagerDuty).
//! - [`http`], [`retry`]: the one HTTP agent and the one retry policy every outgoing call uses.
//! - [`ml`]: the ONNX Runtime, the model store, training data, training and checks of the
//!   AutoEncoder and LSTM.
//! - [`onboard`]: services and routes registered as they appear.
//! - [`simulate`], [`eval`]: synthetic traffic with labelled incidents; scoring alerts against
//!   labels, the evaluation suite, NAB.
//! - [`report`]: a self-contained HTML page of a `detect` run (timelines, alerts, journeys).
//! - [`kibana`]: importing the saved objects. [`bench`]: throughput and forest measurements.
//! - [`serve`]: the worker's own `/health` and `/metrics` (axum).
//! - [`config`]: the TOML configuration, environment and flags, parsed then validated once.
//! - [`cli`]: the `apiwatch` commands, a thin front; `main.rs` only calls [`cli::main`].
//! - [`output`]: standard output that can fail without a panic.

/// Writes a line to standard output; a closed or full stdout becomes an [`output::StdoutError`]
/// returned from the enclosing function (never a panic, as `println!` would).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::output::StdoutError)?
    }};
}

pub mod output;

pub mod alert;
pub mod bench;
pub mod cli;
pub mod config;
pub mod detect;
pub mod es;
pub mod eval;
pub mod feedback;
pub mod http;
pub mod job;
pub mod kibana;
pub mod ml;
pub mod model;
pub mod notify;
pub mod onboard;
pub mod pipeline;
pub mod report;
pub mod retry;
pub mod serve;
pub mod simulate;
pub mod sink;
pub mod source;
#[cfg(test)]
pub(crate) mod test_http;
