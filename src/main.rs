//! The `mapga` command line: parse arguments, call the library, print, set the exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    mapga::cli::process::tune_allocator();
    mapga::cli::process::default_sigpipe();
    let cli = mapga::cli::Cli::parse_args();
    mapga::cli::run(cli)
}
