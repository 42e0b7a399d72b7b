//! Standard output as a file that can fail: `apiwatch detect ... | head` closes the pipe, and a
//! redirect can fill a disk. Writes go through `outln!`, whose error says it was standard output;
//! [`exit_code`] turns a closed pipe into a quiet exit with the shell's SIGPIPE status (141)
//! and any other failure into a message, never a panic.

use std::process::ExitCode;

/// Writing to standard output failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output: {0}")]
pub struct StdoutError(pub std::io::Error);

/// The exit code for a run's error, and whether to print it: a closed stdout ends quietly.
pub fn exit_code(err: &anyhow::Error) -> (ExitCode, bool) {
    let closed = err
        .chain()
        .filter_map(|c| c.downcast_ref::<StdoutError>())
        .any(|e| e.0.kind() == std::io::ErrorKind::BrokenPipe);
    if closed {
        (ExitCode::from(141), false)
    } else {
        (ExitCode::FAILURE, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_quiet_and_other_failures_are_said() {
        let closed = anyhow::Error::new(StdoutError(std::io::ErrorKind::BrokenPipe.into()));
        assert!(!exit_code(&closed).1);
        let full = anyhow::Error::new(StdoutError(std::io::Error::from_raw_os_error(28)));
        assert!(exit_code(&full).1);
        assert!(full.to_string().starts_with("cannot write to standard output"));
        // A broken pipe elsewhere (a socket) is an error to report, not a closed stdout.
        let socket = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(exit_code(&socket).1);
    }
}
