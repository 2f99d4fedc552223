//! `tessera` binary: wiring only. See `cli` for commands and `server` for the services.

use clap::Parser;

// mimalloc instead of glibc malloc: Pingora and Tessera allocate ~100 times per request, and
// the boxed per-request future is ~100 KB; issue 11's measurements (README "Performance"):
// see the instructions-per-request and load rows there. Maintained (Microsoft's allocator,
// vendored C source built by `cc`), no RustSec advisory.
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
