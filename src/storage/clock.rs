//! Wall-clock time for what is written to disk: the broker reasons in `Instant`s, but a
//! deadline must mean the same moment after a restart. One base pair (an `Instant` and the
//! wall clock at that instant) converts both ways for the whole process.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn base() -> &'static (Instant, u64) {
    static BASE: OnceLock<(Instant, u64)> = OnceLock::new();
    BASE.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        (Instant::now(), wall)
    })
}

/// Milliseconds since the Unix epoch at `t`.
pub fn wall_ms(t: Instant) -> u64 {
    let (i0, w0) = *base();
    if t >= i0 {
        w0.saturating_add(t.duration_since(i0).as_millis() as u64)
    } else {
        w0.saturating_sub(i0.duration_since(t).as_millis() as u64)
    }
}

/// The `Instant` of a wall-clock time (a time before this process started maps to its start
/// or earlier, as far as `Instant` can go back).
pub fn instant_of(ms: u64) -> Instant {
    let (i0, w0) = *base();
    if ms >= w0 {
        i0 + Duration::from_millis(ms - w0)
    } else {
        i0.checked_sub(Duration::from_millis(w0 - ms)).unwrap_or(i0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_within_a_millisecond() {
        let now = Instant::now();
        for d in [0u64, 1, 999, 86_400_000] {
            let t = now + Duration::from_millis(d);
            let back = instant_of(wall_ms(t));
            let diff = if back > t { back - t } else { t - back };
            assert!(diff <= Duration::from_millis(1), "{d}: {diff:?}");
        }
    }
}
