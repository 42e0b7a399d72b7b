//! apiwatch: AI-powered monitoring of API calls for teams that run the Elastic stack.
//!
//! # Layout
//! - [`model`]: events, entities, windows, anomaly and alert documents (imports nothing of ours).
//! - [`source`], [`sink`]: where events come from and where results go, behind traits.
//! - [`pipeline`]: the window loop, one code path whatever the source.
//! - [`detect`]: route templates, baselines, isolation forests, sequences, journeys, forecasts;
//!   each detector behind the [`detect::Detector`] trait.
//! - [`alert`]: grouping anomalies into alerts, origin, priority, rendering.
//! - [`es`]: Elasticsearch mode: client, templates and `setup`, point-in-time reader, bulk
//!   writer, checkpoints and leases, the `run`/`backfill` loop, the simulated-traffic loader.
//! - [`notify`]: who is told about which alert, how often; email through SMTP.
//! - [`onboard`]: services and routes registered as they appear.
//! - [`simulate`], [`eval`]: synthetic traffic with labelled incidents, and scoring alerts.
//! - [`report`]: a self-contained HTML page of a `detect` run (timelines, alerts, journeys).
//! - [`config`]: the TOML configuration, parsed then validated into a checked config.
//! - [`cli`]: the `apiwatch` commands; `main.rs` only calls [`cli::main`].

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
pub mod simulate;
pub mod sink;
pub mod source;
#[cfg(test)]
pub(crate) mod test_http;
