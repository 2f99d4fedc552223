//! `tessera` binary: wiring only. See `cli` for commands and `server` for the services.

use clap::Parser;

fn main() {
    tessera::logging::init();
    let cli = tessera::cli::Cli::parse();
    if let Err(e) = tessera::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(match e {
            tessera::cli::CliError::Usage(_) => 2,
            _ => 1,
        });
    }
}
