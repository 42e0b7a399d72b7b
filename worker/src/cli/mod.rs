//! The `apiwatch` commands: a thin front over the library. [`main`] parses, sets up tracing,
//! runs one command and maps its error to an exit code. Commands come in two families, each in
//! its own module: [`operate`] (what an operator runs) first in `--help`, then [`lab`]
//! (simulation, evaluation, benchmarks) and [`models`] (training and checking the models).

mod answer;
mod args;
mod lab;
mod models;
mod operate;

use std::fs::File;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "apiwatch",
    version,
    about = "AI-powered monitoring of API calls: anomalies, journeys, forecasts and grouped alerts"
)]
struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info`, `apiwatch=debug`.
    #[arg(long, global = true, env = "APIWATCH_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Operate(operate::OperateCommand),
    #[command(flatten)]
    Answer(answer::AnswerCommand),
    #[command(flatten)]
    Lab(lab::LabCommand),
    #[command(flatten)]
    Models(models::ModelCommand),
}

/// The command line with lab commands listed after the operator's.
fn command_line() -> clap::Command {
    let lab = models::ModelCommand::augment_subcommands(lab::LabCommand::augment_subcommands(clap::Command::new("lab")));
    let mut listing = String::from("Lab commands (simulation, evaluation, benchmarks, models):\n");
    let width = lab.get_subcommands().map(|c| c.get_name().len()).max().unwrap_or(0);
    let mut cmd = Cli::command().subcommand_help_heading("Operator commands");
    for sub in lab.get_subcommands() {
        let name = sub.get_name().to_owned();
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let first = about.lines().next().unwrap_or_default();
        listing.push_str(&format!("  {name:<width$}  {first}\n"));
        cmd = cmd.mut_subcommand(&name, |c| c.hide(true));
    }
    cmd.after_help(listing)
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&command_line().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Operate(c) => operate::run(c),
        Command::Answer(c) => answer::run(c),
        Command::Lab(c) => lab::run(c),
        Command::Models(c) => models::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let (code, say) = crate::output::exit_code(&e);
            if say {
                eprintln!("error: {e:#}");
            }
            code
        }
    }
}

/// A spinner on a terminal; nothing when stderr is a file or a pipe.
fn spinner(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
        pb.set_style(style);
    }
    pb.set_message(what.to_owned());
    pb
}

/// A progress bar on a terminal; nothing when stderr is a file or a pipe.
fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {percent}% eta {eta}") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_owned());
    pb
}

/// A spinner's message every 64 Ki events: `what: N events, R/s`.
fn rate_message<'a>(pb: &'a ProgressBar, what: &str) -> impl FnMut(u64) + 'a {
    let started = std::time::Instant::now();
    let what = what.to_owned();
    move |n| {
        if n % 65_536 < 4096 {
            pb.set_message(format!(
                "{what}: {n} events, {:.0}/s",
                n as f64 / started.elapsed().as_secs_f64().max(1e-9)
            ));
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    serde_json::from_reader(std::io::BufReader::new(f)).with_context(|| format!("{} is not the expected JSON", path.display()))
}

/// `1 anomaly`, `2 anomalies`.
fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent_and_lists_lab_commands_after_the_operators() {
        command_line().debug_assert();
        let help = command_line().render_help().to_string();
        let operate = help.find("Operator commands").expect("a heading for operator commands");
        let lab = help.find("Lab commands").expect("a heading for lab commands");
        assert!(operate < lab, "{help}");
        assert!(
            help[operate..lab].contains("backfill") && !help[operate..lab].contains("eval-nab"),
            "{help}"
        );
        assert!(help[lab..].contains("eval-nab"), "{help}");
    }

    #[test]
    fn a_bad_flag_is_refused_as_the_same_value_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[windows]\nwidth_secs = 5\n").unwrap();
        let file = crate::config::load_app(Some(&path), &|_| None, &Default::default()).unwrap_err();
        let matches = command_line().get_matches_from(["apiwatch", "detect", "-i", "x", "-o", "y", "--window-secs", "5"]);
        let Ok(Cli {
            command: Command::Operate(operate::OperateCommand::Detect { args, .. }),
            ..
        }) = Cli::from_arg_matches(&matches)
        else {
            panic!("detect parses");
        };
        let flag = crate::config::load_app(None, &|_| None, &args.overrides()).unwrap_err();
        let (
            crate::config::ConfigError::Invalid { key: k1, problem: p1, .. },
            crate::config::ConfigError::Invalid {
                key: k2,
                problem: p2,
                path,
            },
        ) = (file, flag)
        else {
            panic!("both are refused as invalid values");
        };
        assert_eq!((k1, p1), (k2, p2.clone()));
        assert!(path.starts_with("--window-secs"), "the flag is named: {path}: {p2}");
        // The rule between two keys holds whichever side a flag set.
        let err = crate::config::parse_with(
            "[alerts]\nquiet_to_resolve_secs = 120\n",
            "c.toml",
            &|_| None,
            &crate::config::Overrides {
                window_secs: Some(600),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("quiet_to_resolve_secs") && err.contains("at least one window"),
            "{err}"
        );
        // The Elasticsearch flags go through the same checks as their keys.
        let matches = command_line().get_matches_from(["apiwatch", "health", "--es", "http://u:p@es:9200", "--prefix", "Team A"]);
        let Ok(Cli {
            command: Command::Operate(operate::OperateCommand::Health { es, .. }),
            ..
        }) = Cli::from_arg_matches(&matches)
        else {
            panic!("health parses");
        };
        let err = es.app(None, None).unwrap_err().to_string();
        assert!(err.starts_with("--prefix") && err.contains("elasticsearch.prefix"), "{err}");
        let fine = args::EsArgs { prefix: None, ..es };
        let err = fine.app(None, None).unwrap_err().to_string();
        assert!(
            err.starts_with("--es") && err.contains("must not hold credentials") && !err.contains("u:p"),
            "{err}"
        );
    }
}
