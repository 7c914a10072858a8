//! The will rules in one place: "when is the will published?".
//!
//! - Published when the network connection closes for any reason except a DISCONNECT 0x00
//!   from the client (keep-alive expiry, I/O error, protocol error, server shutdown, take-over,
//!   MQTT 5 DISCONNECT 0x04 and any other DISCONNECT reason).
//! - MQTT 5 Will Delay Interval: published when the delay elapses or the session ends,
//!   whichever is first; if a connection resumes the session before then, it is not published
//!   (the broker cancels the delayed will when the client id reconnects with the session).
//! - Take-over: see [`on_takeover`].
use std::time::Duration;

use crate::protocol::ProtocolVersion;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WillDecision {
    PublishNow,
    /// Publish after this delay unless the session is resumed first.
    Delay(Duration),
    Discard,
}

/// The connection ended (not by take-over). `normal_disconnect`: DISCONNECT 0x00 from the
/// client. `session_expiry`: seconds the session outlives the connection (0 = it ends now,
/// 0xFFFFFFFF = never). `will_delay`: Will Delay Interval (0 for MQTT 3.1.1).
pub fn on_connection_end(
    normal_disconnect: bool,
    session_expiry: u32,
    will_delay: u32,
) -> WillDecision {
    if normal_disconnect {
        return WillDecision::Discard;
    }
    let delay = will_delay.min(session_expiry);
    if delay == 0 {
        WillDecision::PublishNow
    } else {
        WillDecision::Delay(Duration::from_secs(u64::from(delay)))
    }
}

/// A take-over that does not publish the will because the session continues (MQTT 5, Will
/// Delay > 0, see [`on_takeover`]) has not yet seen the session resumed: the claiming
/// connection may still fail, or be taken over by a Clean Start. So the will waits its delay
/// with the session, cancelled once a connection really resumes it, published when the delay
/// elapses or the session ends. Returns that delay, or None when `on_takeover` decided
/// otherwise (published now).
pub fn carried_on_takeover(
    version: ProtocolVersion,
    new_clean_start: bool,
    old_session_expiry: u32,
    will_delay: u32,
) -> Option<Duration> {
    match on_takeover(version, new_clean_start, old_session_expiry, will_delay) {
        WillDecision::Discard => Some(Duration::from_secs(u64::from(
            will_delay.min(old_session_expiry),
        ))),
        _ => None,
    }
}

/// A delayed will waits on an offline session (its connection ended, the delay has not
/// elapsed) and a new CONNECT takes the session over: Clean Start = 1 ends the session, so the
/// will is published now; otherwise it keeps waiting with the session, cancelled once a
/// connection resumes it (as [`carried_on_takeover`]).
pub fn on_takeover_of_offline(new_clean_start: bool) -> WillDecision {
    if new_clean_start {
        WillDecision::PublishNow
    } else {
        WillDecision::Discard
    }
}

/// A delayed will waits and its session ends (expiry, or the session could not be kept): the
/// will is published now, whatever delay was left.
pub fn on_session_end() -> WillDecision {
    WillDecision::PublishNow
}

/// The connection is taken over by a new CONNECT for the same client id.
/// - new connection with Clean Start = 1: the old session ends, publish now;
/// - old session expiry 0: the session ends, publish now;
/// - Will Delay 0, and every MQTT 3.1.1 take-over: publish now;
/// - Will Delay > 0 and the session continues: the session is resumed before the delay
///   elapses, so the will is not published.
pub fn on_takeover(
    version: ProtocolVersion,
    new_clean_start: bool,
    old_session_expiry: u32,
    will_delay: u32,
) -> WillDecision {
    if !version.is_v5() || new_clean_start || old_session_expiry == 0 || will_delay == 0 {
        WillDecision::PublishNow
    } else {
        WillDecision::Discard
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProtocolVersion::*;

    #[test]
    fn normal_disconnect_discards() {
        assert_eq!(on_connection_end(true, 0, 0), WillDecision::Discard);
        assert_eq!(on_connection_end(true, 100, 10), WillDecision::Discard);
    }

    #[test]
    fn abnormal_end_publishes_now_without_delay() {
        assert_eq!(on_connection_end(false, 100, 0), WillDecision::PublishNow);
    }

    #[test]
    fn abnormal_end_with_session_ending_publishes_now_despite_delay() {
        assert_eq!(on_connection_end(false, 0, 30), WillDecision::PublishNow);
    }

    #[test]
    fn delay_is_min_of_will_delay_and_session_expiry() {
        assert_eq!(
            on_connection_end(false, 100, 30),
            WillDecision::Delay(Duration::from_secs(30))
        );
        assert_eq!(
            on_connection_end(false, 20, 30),
            WillDecision::Delay(Duration::from_secs(20))
        );
        assert_eq!(
            on_connection_end(false, u32::MAX, 30),
            WillDecision::Delay(Duration::from_secs(30))
        );
    }

    #[test]
    fn takeover_four_cases() {
        assert_eq!(on_takeover(V5, true, 100, 30), WillDecision::PublishNow);
        assert_eq!(on_takeover(V5, false, 0, 30), WillDecision::PublishNow);
        assert_eq!(on_takeover(V5, false, 100, 0), WillDecision::PublishNow);
        assert_eq!(on_takeover(V5, false, 100, 30), WillDecision::Discard);
    }

    #[test]
    fn takeover_v311_always_publishes() {
        assert_eq!(
            on_takeover(V311, false, u32::MAX, 0),
            WillDecision::PublishNow
        );
        assert_eq!(on_takeover(V311, true, 0, 0), WillDecision::PublishNow);
    }
}
