//! Topic name and topic filter validation, shared-subscription syntax:
//! - `validate_topic_name(&str) -> Result<(), DecodeError>`: non-empty, no `+`/`#`, no U+0000.
//! - `validate_topic_filter(&str) -> Result<(), DecodeError>`: non-empty, `#` only last and alone
//!   in its level, `+` alone in its level, no U+0000; `$share/{group}/{filter}` with a non-empty
//!   group without `+`, `#` or `/`, and a valid non-empty filter.
//! - `parse_shared(&str) -> Option<(&str /*group*/, &str /*filter*/)>` for `$share/...`.
//! - `topic_matches(filter, topic) -> bool`: a simple reference matcher (MQTT 4.7), including
//!   the rule that a filter starting with a wildcard never matches a topic starting with `$`.
use super::error::DecodeError;

const SHARE_PREFIX: &str = "$share/";

/// A topic name as used in PUBLISH (and a Will Topic): at least one character, no wildcard
/// characters, no U+0000.
pub fn validate_topic_name(topic: &str) -> Result<(), DecodeError> {
    if topic.is_empty() {
        return Err(DecodeError::TopicNameInvalid("empty topic name"));
    }
    for &b in topic.as_bytes() {
        match b {
            b'+' | b'#' => {
                return Err(DecodeError::TopicNameInvalid(
                    "wildcard character in topic name",
                ))
            }
            0 => return Err(DecodeError::TopicNameInvalid("U+0000 in topic name")),
            _ => {}
        }
    }
    Ok(())
}

/// A topic filter as used in SUBSCRIBE and UNSUBSCRIBE, including the shared-subscription form
/// `$share/{group}/{filter}`.
pub fn validate_topic_filter(filter: &str) -> Result<(), DecodeError> {
    if filter.is_empty() {
        return Err(DecodeError::TopicFilterInvalid("empty topic filter"));
    }
    if let Some(rest) = filter.strip_prefix(SHARE_PREFIX) {
        let Some((group, inner)) = rest.split_once('/') else {
            return Err(DecodeError::TopicFilterInvalid(
                "shared subscription without a topic filter",
            ));
        };
        if group.is_empty() {
            return Err(DecodeError::TopicFilterInvalid(
                "shared subscription with an empty share name",
            ));
        }
        if group.bytes().any(|b| b == b'+' || b == b'#') {
            return Err(DecodeError::TopicFilterInvalid(
                "wildcard character in share name",
            ));
        }
        if inner.is_empty() {
            return Err(DecodeError::TopicFilterInvalid(
                "shared subscription with an empty topic filter",
            ));
        }
        if group.as_bytes().contains(&0) {
            return Err(DecodeError::TopicFilterInvalid("U+0000 in topic filter"));
        }
        return validate_plain_filter(inner);
    }
    validate_plain_filter(filter)
}

fn validate_plain_filter(filter: &str) -> Result<(), DecodeError> {
    let bytes = filter.as_bytes();
    let n = bytes.len();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'#' => {
                // Alone in its level and the last character of the filter.
                if i + 1 != n {
                    return Err(DecodeError::TopicFilterInvalid(
                        "'#' is not the last character of the filter",
                    ));
                }
                if i > 0 && bytes[i - 1] != b'/' {
                    return Err(DecodeError::TopicFilterInvalid(
                        "'#' does not occupy a whole level",
                    ));
                }
            }
            b'+' => {
                let alone_before = i == 0 || bytes[i - 1] == b'/';
                let alone_after = i + 1 == n || bytes[i + 1] == b'/';
                if !(alone_before && alone_after) {
                    return Err(DecodeError::TopicFilterInvalid(
                        "'+' does not occupy a whole level",
                    ));
                }
            }
            0 => return Err(DecodeError::TopicFilterInvalid("U+0000 in topic filter")),
            _ => {}
        }
    }
    Ok(())
}

/// Splits `$share/{group}/{filter}` into `(group, filter)`. `None` for anything that is not a
/// shared subscription (syntax is checked by [`validate_topic_filter`]).
pub fn parse_shared(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix(SHARE_PREFIX)?.split_once('/')
}

/// Whether `filter` contains a wildcard (`+` or `#`).
pub fn has_wildcard(filter: &str) -> bool {
    filter.bytes().any(|b| b == b'+' || b == b'#')
}

/// Reference matcher: does the topic name `topic` match the topic filter `filter`?
///
/// `+` matches exactly one level (possibly empty), `#` matches the parent level and any number
/// of child levels. A filter whose first character is a wildcard never matches a topic whose
/// first character is `$`. A shared filter `$share/{group}/{f}` matches like `f`.
/// Both arguments are assumed to be valid (see the validators above).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let filter = match parse_shared(filter) {
        Some((_, inner)) => inner,
        None => filter,
    };
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f_levels = filter.split('/');
    let mut t_levels = topic.split('/');
    loop {
        match (f_levels.next(), t_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) => {
                if f != t {
                    return false;
                }
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::reason::ReasonCode;

    #[test]
    fn topic_names() {
        for ok in [
            "a",
            "a/b",
            "/",
            "//",
            "$SYS/x",
            "a b/ü",
            "sport/tennis/player1",
        ] {
            assert_eq!(validate_topic_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a/+", "#", "a/#", "a+b", "x\0y"] {
            let e = validate_topic_name(bad).unwrap_err();
            assert_eq!(e.reason_code(), ReasonCode::TOPIC_NAME_INVALID, "{bad:?}");
        }
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "a",
            "#",
            "+",
            "+/+",
            "/+",
            "a/#",
            "a/+/b",
            "+/tennis/#",
            "/",
            "$SYS/#",
            "$share/g/a/b",
            "$share/g/#",
            "$share/group1/+/x",
            "$share",
            "$sharex/a",
        ] {
            assert_eq!(validate_topic_filter(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a#",
            "a/#/b",
            "#/",
            "##",
            "a+",
            "+a",
            "a/b+/c",
            "a\0",
            "$share/",
            "$share/g",
            "$share/g/",
            "$share//a",
            "$share/g+/a",
            "$share/g#/a",
            "$share/g/a/#/b",
        ] {
            let e = validate_topic_filter(bad).unwrap_err();
            assert_eq!(e.reason_code(), ReasonCode::TOPIC_FILTER_INVALID, "{bad:?}");
        }
    }

    #[test]
    fn shared_parse() {
        assert_eq!(parse_shared("$share/g/a/b"), Some(("g", "a/b")));
        assert_eq!(parse_shared("$share/g/#"), Some(("g", "#")));
        assert_eq!(parse_shared("a/b"), None);
        assert_eq!(parse_shared("$share/g"), None);
        assert_eq!(parse_shared("$sharex/g/a"), None);
    }

    #[test]
    fn matching() {
        let cases: &[(&str, &str, bool)] = &[
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/#", "sport", true),
            ("#", "a/b/c", true),
            ("#", "/", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("#", "$SYS/x", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$share/g/a/+", "a/b", true),
            ("$share/g/#", "$SYS/b", false),
            ("a/+/c", "a//c", true),
        ];
        for &(f, t, want) in cases {
            assert_eq!(topic_matches(f, t), want, "{f} vs {t}");
        }
    }
}
