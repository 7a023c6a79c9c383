//! `tracer`: a thin shell over [`tracer::cli::run`] that turns its result
//! into an exit status and a one-line error.
#![expect(
    unused_crate_dependencies,
    reason = "the binary is a shell over the library, which uses the rest"
)]

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = tracer::cli::Cli::parse();
    match tracer::cli::run(cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("tracer: {e:#}");
            ExitCode::from(tracer::cli::EXIT_ERROR as u8)
        }
    }
}
