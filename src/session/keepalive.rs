//! Expiry arithmetic, in one place: "when does this connection expire?" and "when does an
//! offline session expire?" ([`session_deadline`]; the broker core's timers only act on these).
//!
//! - The effective keep alive comes from the client's CONNECT value and the operator policy
//!   ([`negotiate`]).
//! - The connection expires 1.5 x the effective keep alive after the last byte received from the
//!   client ([`deadline`]), exactly: k seconds -> 1500 x k milliseconds. 0 disables the timer.
//! - Only bytes received from the client move `last_rx`; nothing the broker sends does.
//! - `last_rx` is kept as a [`Stamp`]: 8 bytes instead of an `Instant`'s 16 in every
//!   connection, and the same instant to the nanosecond.
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::config::{ProtocolLimits, V311KeepAlivePolicy};
use crate::protocol::ProtocolVersion;

/// Outcome of keep-alive negotiation for one CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Use `effective` (seconds, 0 = disabled). `server_keep_alive` is the MQTT 5 CONNACK
    /// property: `Some` only when `effective` differs from the client's value.
    Use {
        effective: u16,
        server_keep_alive: Option<u16>,
    },
    /// MQTT 3.1.1 with [`V311KeepAlivePolicy::Refuse`] and an out-of-policy value.
    Refuse,
}

/// The value the operator policy wants for a client asking `client` seconds.
pub fn policy_value(client: u16, limits: &ProtocolLimits) -> u16 {
    if let Some(forced) = limits.server_keep_alive {
        return forced;
    }
    if client == 0 {
        return limits.keep_alive_when_zero.unwrap_or(0);
    }
    if limits.max_keep_alive > 0 && client > limits.max_keep_alive {
        return limits.max_keep_alive;
    }
    client
}

/// Effective keep alive for a CONNECT with Keep Alive `client`.
pub fn negotiate(version: ProtocolVersion, client: u16, limits: &ProtocolLimits) -> KeepAlive {
    let wanted = policy_value(client, limits);
    if wanted == client {
        return KeepAlive::Use {
            effective: client,
            server_keep_alive: None,
        };
    }
    match version {
        ProtocolVersion::V5 => KeepAlive::Use {
            effective: wanted,
            server_keep_alive: Some(wanted),
        },
        ProtocolVersion::V31 | ProtocolVersion::V311 => {
            match limits.v311_keep_alive_out_of_policy {
                V311KeepAlivePolicy::Accept => KeepAlive::Use {
                    effective: client,
                    server_keep_alive: None,
                },
                V311KeepAlivePolicy::Clamp => KeepAlive::Use {
                    effective: wanted,
                    server_keep_alive: None,
                },
                V311KeepAlivePolicy::Refuse => KeepAlive::Refuse,
            }
        }
    }
}

/// 1.5 x `keep_alive` seconds (exact, in milliseconds).
pub fn grace(keep_alive: u16) -> Duration {
    Duration::from_millis(u64::from(keep_alive) * 1500)
}

/// When a connection whose last received byte was at `last_rx` expires; `None` if disabled.
pub fn deadline(last_rx: Instant, keep_alive: u16) -> Option<Instant> {
    if keep_alive == 0 {
        None
    } else {
        Some(last_rx + grace(keep_alive))
    }
}

/// When an offline session ends: `expiry` seconds (its Session Expiry Interval) after its
/// connection ended at `ended`; None for 0xFFFFFFFF (never). Session expiry 0 never gets here:
/// such a session ends with its connection.
pub fn session_deadline(ended: Instant, expiry: u32) -> Option<Instant> {
    (expiry != u32::MAX).then(|| ended + Duration::from_secs(expiry.into()))
}

/// The instant every [`Stamp`] counts from: the first one stamped (no clock is read).
static STAMP_BASE: OnceLock<Instant> = OnceLock::new();

/// An instant as signed nanoseconds from a process-wide base, either side of it: exact for
/// any two instants within 292 years of each other, in 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(i64);

impl Stamp {
    pub fn new(t: Instant) -> Stamp {
        let base = *STAMP_BASE.get_or_init(|| t);
        let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        match t.checked_duration_since(base) {
            Some(d) => Stamp(ns(d)),
            None => Stamp(-ns(base.duration_since(t))),
        }
    }

    pub fn instant(self) -> Instant {
        let base = *STAMP_BASE
            .get()
            .expect("a stamp was made, so the base is set");
        let d = Duration::from_nanos(self.0.unsigned_abs());
        let t = if self.0 >= 0 {
            base.checked_add(d)
        } else {
            base.checked_sub(d)
        };
        // Came from a real instant, so it is one (the fallback is never taken).
        t.unwrap_or(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v5(client: u16, limits: &ProtocolLimits) -> KeepAlive {
        negotiate(ProtocolVersion::V5, client, limits)
    }

    #[test]
    fn a_stamp_is_the_same_instant_on_either_side_of_the_base() {
        let t = Instant::now();
        Stamp::new(t);
        for ns in [0, 1, 999, 1_000_000_007, 86_400 * 1_000_000_000] {
            let d = Duration::from_nanos(ns);
            let later = t + d;
            assert_eq!(Stamp::new(later).instant(), later);
            if let Some(earlier) = t.checked_sub(d) {
                assert_eq!(Stamp::new(earlier).instant(), earlier);
                assert!(Stamp::new(earlier) <= Stamp::new(later));
            }
        }
    }

    #[test]
    fn grace_is_exactly_one_and_a_half() {
        assert_eq!(grace(1), Duration::from_millis(1500));
        assert_eq!(grace(60), Duration::from_secs(90));
        assert_eq!(grace(u16::MAX), Duration::from_millis(65535 * 1500));
    }

    #[test]
    fn zero_disables_deadline() {
        let t = Instant::now();
        assert_eq!(deadline(t, 0), None);
        assert_eq!(deadline(t, 10), Some(t + Duration::from_secs(15)));
    }

    #[test]
    fn client_value_accepted_without_property() {
        let l = ProtocolLimits::default();
        assert_eq!(
            v5(30, &l),
            KeepAlive::Use {
                effective: 30,
                server_keep_alive: None
            }
        );
        assert_eq!(
            v5(u16::MAX, &l),
            KeepAlive::Use {
                effective: u16::MAX,
                server_keep_alive: None
            }
        );
    }

    #[test]
    fn v5_above_max_gets_server_keep_alive() {
        let l = ProtocolLimits {
            max_keep_alive: 100,
            ..Default::default()
        };
        assert_eq!(
            v5(101, &l),
            KeepAlive::Use {
                effective: 100,
                server_keep_alive: Some(100)
            }
        );
        assert_eq!(
            v5(100, &l),
            KeepAlive::Use {
                effective: 100,
                server_keep_alive: None
            }
        );
    }

    #[test]
    fn v5_zero_with_policy_gets_value() {
        let l = ProtocolLimits {
            keep_alive_when_zero: Some(60),
            ..Default::default()
        };
        assert_eq!(
            v5(0, &l),
            KeepAlive::Use {
                effective: 60,
                server_keep_alive: Some(60)
            }
        );
        assert_eq!(
            v5(0, &ProtocolLimits::default()),
            KeepAlive::Use {
                effective: 0,
                server_keep_alive: None
            }
        );
    }

    #[test]
    fn v5_forced_value_only_sent_when_different() {
        let l = ProtocolLimits {
            server_keep_alive: Some(20),
            ..Default::default()
        };
        assert_eq!(
            v5(20, &l),
            KeepAlive::Use {
                effective: 20,
                server_keep_alive: None
            }
        );
        assert_eq!(
            v5(5, &l),
            KeepAlive::Use {
                effective: 20,
                server_keep_alive: Some(20)
            }
        );
    }

    #[test]
    fn v311_policy_accept_enforce_refuse() {
        let mut l = ProtocolLimits {
            max_keep_alive: 100,
            ..Default::default()
        };
        let v3 = |l: &ProtocolLimits| negotiate(ProtocolVersion::V311, 500, l);
        assert_eq!(
            v3(&l),
            KeepAlive::Use {
                effective: 500,
                server_keep_alive: None
            }
        );
        l.v311_keep_alive_out_of_policy = V311KeepAlivePolicy::Clamp;
        assert_eq!(
            v3(&l),
            KeepAlive::Use {
                effective: 100,
                server_keep_alive: None
            }
        );
        l.v311_keep_alive_out_of_policy = V311KeepAlivePolicy::Refuse;
        assert_eq!(v3(&l), KeepAlive::Refuse);
        // In policy: never refused.
        assert_eq!(
            negotiate(ProtocolVersion::V311, 50, &l),
            KeepAlive::Use {
                effective: 50,
                server_keep_alive: None
            }
        );
    }
}
