//! Wall-clock Unix time, the one copy every module uses (session record timestamps, anomaly
//! windows, token expiry checks in `request_filter`, admin listings).
//!
//! A clock before 1970 reads as 0 rather than failing: callers compare or log the value and
//! have nothing better to do with an error.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch.
pub fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn agree() {
        let (s, ms) = (super::unix_secs(), super::unix_ms());
        assert!(s > 1_700_000_000);
        assert!((ms / 1000) as i64 - s <= 1);
    }
}
