//! The `apiwatch` binary: everything lives in the library; this only maps the result to an exit
//! code.

/// mimalloc: the pipeline allocates many small, short-lived strings per event, a pattern where
/// it is markedly faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    apiwatch::cli::main()
}
