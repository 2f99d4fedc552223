//! `tessera` binary: wiring only. See `cli` for commands and `server` for the services.

use clap::Parser;

// The system allocator. mimalloc measured 12-17 % fewer instructions per request (README
// "Performance") but is not used: the newest `libmimalloc-sys` (0.1.49) vendors mimalloc
// 2.3.2, without the security fixes of mimalloc 2.4.1-2.4.4 (2026-07/08). Revisit when the
// sys crate ships them.

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
