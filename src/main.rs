//! `tessera` binary: wiring only. See `cli` for commands and `server` for the services.

use clap::Parser;

// mimalloc instead of glibc malloc: Pingora and Tessera allocate ~130 times (~110 KB) per
// request; mimalloc costs 12-17 % fewer instructions per request (README "Performance", issue
// 11). Maintained (Microsoft's allocator, vendored C source built by `cc`); no RustSec
// advisory known for it when added.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
