//! The `mapga` command line: parse arguments, call the library, print, set the exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    mapga::cli::process::tune_allocator();
    mapga::cli::process::default_sigpipe();
    let cli = mapga::cli::Cli::parse();
    mapga::cli::run(cli)
}
