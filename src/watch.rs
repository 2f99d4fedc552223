//! File change detection for the background reloaders (certificates and keys in `tls`, the
//! keyring in `server`). A file counts as changed when its modification time or size differs
//! from the last look; a file that cannot be read stamps as `(None, 0)`, so its return is a
//! change too. Never on the request path: reloaders poll every `tls.reload_interval`
//! (`every`).

use std::future::Future;
use std::path::Path;
use std::time::{Duration, SystemTime};

use pingora::server::ShutdownWatch;

/// Run `f` every `interval` until shutdown: the reloaders' loop. A slow `f` delays the next
/// run rather than bunching missed ones.
pub async fn every<F, Fut>(interval: Duration, shutdown: &mut ShutdownWatch, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => f().await,
        }
    }
}

/// Modification time and size of a set of files, in order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FileStamp(Vec<(Option<SystemTime>, u64)>);

impl FileStamp {
    pub fn of(paths: &[&Path]) -> FileStamp {
        FileStamp(
            paths
                .iter()
                .map(|p| match std::fs::metadata(p) {
                    Ok(m) => (m.modified().ok(), m.len()),
                    Err(_) => (None, 0),
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_in_size_or_presence_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        let before = FileStamp::of(&[&f]);
        std::fs::write(&f, "a").unwrap();
        let one = FileStamp::of(&[&f]);
        assert_ne!(before, one);
        assert_eq!(one, FileStamp::of(&[&f]));
        std::fs::write(&f, "ab").unwrap();
        assert_ne!(one, FileStamp::of(&[&f]));
    }
}
