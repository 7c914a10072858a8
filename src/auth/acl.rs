//! Topic access control lists, in a line format close to Mosquitto's `acl_file`.
//!
//! ```text
//! # Comments and blank lines are ignored.
//! # Rules before the first `user` line apply to anonymous clients (no user name).
//! topic read public/#
//!
//! # Rules for one user (until the next `user` line).
//! user alice
//! topic readwrite alice/#
//! topic read sensors/+/temperature
//! topic deny sensors/secret/#
//!
//! # Patterns apply to every client, wherever they stand in the file;
//! # %u is the user name, %c the client id.
//! pattern readwrite users/%u/#
//! pattern write devices/%c/status
//! ```
//!
//! `topic [read|write|readwrite|deny] FILTER` (access defaults to `readwrite` when omitted,
//! as in Mosquitto); `pattern` takes the same access words. A FILTER is an MQTT topic filter.
//!
//! Evaluation, for a client with user name U (or none) and client id C:
//! - the rules that apply are U's `user` section (the anonymous section when there is no user
//!   name; none when U has no section) plus every `pattern` with `%u`/`%c` replaced. A pattern
//!   with `%u` does not apply to anonymous clients, and a pattern does not apply when the value
//!   substituted contains `+`, `#` or `/` (it could widen the filter);
//! - PUBLISH to topic T (write) and delivery of a message on topic T (read): refused if a
//!   `deny` rule matches T, else allowed if a rule granting the access matches T, else refused;
//! - SUBSCRIBE to filter F (read; `$share/group/` is stripped first): refused if a `deny` rule
//!   covers F (every topic F matches is denied), else allowed if a rule granting read covers F,
//!   else refused. An allowed wildcard subscription may still reach denied topics (`#` with
//!   `deny secret/#`): those messages are filtered at delivery by the read check above, which
//!   also applies to retained messages sent on subscribe.
//!
//! With an ACL file loaded, anything not granted is refused (default deny).

use std::collections::HashMap;
use std::path::Path;

use crate::protocol::topic::{parse_shared, topic_matches, validate_topic_filter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Perm {
    Read,
    Write,
    ReadWrite,
    Deny,
}

/// The kind of access asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Perm {
    fn grants(self, a: Access) -> bool {
        matches!(
            (self, a),
            (Perm::ReadWrite, _) | (Perm::Read, Access::Read) | (Perm::Write, Access::Write)
        )
    }
}

#[derive(Debug, Clone)]
struct Rule {
    perm: Perm,
    filter: String,
}

#[derive(Debug, Clone, Default)]
pub struct Acl {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

fn parse_rule(rest: &str, n: usize, pattern: bool) -> Result<Rule, String> {
    let rest = rest.trim();
    let (perm, filter) = match rest.split_once(char::is_whitespace) {
        Some((w, f)) if ["read", "write", "readwrite", "deny"].contains(&w) => (
            match w {
                "read" => Perm::Read,
                "write" => Perm::Write,
                "readwrite" => Perm::ReadWrite,
                _ => Perm::Deny,
            },
            f.trim(),
        ),
        _ => (Perm::ReadWrite, rest),
    };
    if filter.is_empty() {
        return Err(format!("line {n}: missing topic filter"));
    }
    if ["read", "write", "readwrite", "deny"].contains(&filter) {
        return Err(format!("line {n}: missing topic filter after {filter:?}"));
    }
    if filter.contains(char::is_whitespace) {
        return Err(format!(
            "line {n}: expected [read|write|readwrite|deny] FILTER, got {rest:?}"
        ));
    }
    // Check the filter with the substitutions replaced by a plain level.
    let probe = if pattern {
        filter.replace("%u", "u").replace("%c", "c")
    } else {
        filter.to_string()
    };
    if validate_topic_filter(&probe).is_err() || parse_shared(&probe).is_some() {
        return Err(format!("line {n}: invalid topic filter {filter:?}"));
    }
    Ok(Rule {
        perm,
        filter: filter.to_string(),
    })
}

/// Does the rule filter `rule` match every topic the filter `filter` matches?
fn covers(rule: &str, filter: &str) -> bool {
    if filter.starts_with('$') != rule.starts_with('$')
        && (rule.starts_with('+') || rule.starts_with('#'))
    {
        return false;
    }
    let mut r = rule.split('/');
    let mut f = filter.split('/');
    loop {
        match (r.next(), f.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(x)) if x != "#" => {}
            (Some(a), Some(b)) => {
                if a != b || a == "+" || b == "+" || b == "#" {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl Acl {
    /// Parse an ACL file's text. Errors name the (1-based) line.
    pub fn parse(text: &str) -> Result<Acl, String> {
        let mut acl = Acl::default();
        let mut section: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            match word {
                "user" => {
                    let name = rest.trim();
                    if name.is_empty() {
                        return Err(format!("line {n}: `user` needs a user name"));
                    }
                    acl.users.entry(name.to_string()).or_default();
                    section = Some(name.to_string());
                }
                "topic" => {
                    let rule = parse_rule(rest, n, false)?;
                    match &section {
                        Some(u) => acl.users.entry(u.clone()).or_default().push(rule),
                        None => acl.anonymous.push(rule),
                    }
                }
                "pattern" => acl.patterns.push(parse_rule(rest, n, true)?),
                other => {
                    return Err(format!(
                        "line {n}: unknown keyword {other:?} (expected user, topic or pattern)"
                    ))
                }
            }
        }
        Ok(acl)
    }

    pub fn load(path: &Path) -> Result<Acl, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read ACL file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("ACL file {}: {e}", path.display()))
    }

    /// Every rule that applies to (user, client id), patterns substituted; `f` returns true to
    /// stop early.
    fn for_each_rule(
        &self,
        user: Option<&str>,
        client_id: &str,
        mut f: impl FnMut(Perm, &str) -> bool,
    ) {
        let own = match user {
            Some(u) => self.users.get(u).map(Vec::as_slice).unwrap_or(&[]),
            None => &self.anonymous,
        };
        for r in own {
            if f(r.perm, &r.filter) {
                return;
            }
        }
        let unsafe_value = |v: &str| v.contains(['+', '#', '/']);
        for r in &self.patterns {
            let mut filter = std::borrow::Cow::Borrowed(r.filter.as_str());
            if filter.contains("%u") {
                match user {
                    Some(u) if !unsafe_value(u) => filter = filter.replace("%u", u).into(),
                    _ => continue,
                }
            }
            if filter.contains("%c") {
                if client_id.is_empty() || unsafe_value(client_id) {
                    continue;
                }
                filter = filter.replace("%c", client_id).into();
            }
            if f(r.perm, &filter) {
                return;
            }
        }
    }

    /// May this client publish to (`Write`) or receive a message on (`Read`) topic `topic`?
    pub fn check_topic(
        &self,
        user: Option<&str>,
        client_id: &str,
        access: Access,
        topic: &str,
    ) -> bool {
        let mut denied = false;
        let mut granted = false;
        self.for_each_rule(user, client_id, |perm, filter| {
            if topic_matches(filter, topic) {
                if perm == Perm::Deny {
                    denied = true;
                    return true;
                }
                granted |= perm.grants(access);
            }
            false
        });
        granted && !denied
    }

    /// May this client subscribe to `filter` (shared-subscription prefix allowed)?
    pub fn check_subscribe(&self, user: Option<&str>, client_id: &str, filter: &str) -> bool {
        let filter = parse_shared(filter).map(|(_, f)| f).unwrap_or(filter);
        let mut denied = false;
        let mut granted = false;
        self.for_each_rule(user, client_id, |perm, rule| {
            if covers(rule, filter) {
                if perm == Perm::Deny {
                    denied = true;
                    return true;
                }
                granted |= perm.grants(Access::Read);
            }
            false
        });
        granted && !denied
    }
}

/// An ACL bound to one client's identity (what a connection's state machine checks against).
#[derive(Debug, Clone)]
pub struct ClientAcl {
    pub acl: std::sync::Arc<Acl>,
    pub username: Option<bytestring::ByteString>,
    pub client_id: bytestring::ByteString,
}

impl ClientAcl {
    pub fn can_publish(&self, topic: &str) -> bool {
        self.acl.check_topic(
            self.username.as_deref(),
            &self.client_id,
            Access::Write,
            topic,
        )
    }
    pub fn can_subscribe(&self, filter: &str) -> bool {
        self.acl
            .check_subscribe(self.username.as_deref(), &self.client_id, filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# anonymous
topic read public/#

user alice
topic readwrite alice/#
topic read sensors/+/temp
topic deny sensors/secret/#
topic shared/x

user bob
topic write bob/out

pattern readwrite users/%u/#
pattern read devices/%c/#
";

    fn acl() -> Acl {
        Acl::parse(SAMPLE).unwrap()
    }

    #[test]
    fn anonymous_section() {
        let a = acl();
        assert!(a.check_topic(None, "c", Access::Read, "public/x"));
        assert!(!a.check_topic(None, "c", Access::Write, "public/x"));
        assert!(!a.check_topic(None, "c", Access::Read, "alice/x"));
        assert!(a.check_subscribe(None, "c", "public/#"));
        assert!(!a.check_subscribe(None, "c", "#"));
        // %u patterns never apply to anonymous clients; %c ones do.
        assert!(!a.check_subscribe(None, "c", "users/%u/#"));
        assert!(a.check_subscribe(None, "c", "devices/c/#"));
    }

    #[test]
    fn user_sections_and_deny() {
        let a = acl();
        let u = Some("alice");
        assert!(a.check_topic(u, "c", Access::Write, "alice/a/b"));
        assert!(a.check_topic(u, "c", Access::Read, "alice"));
        assert!(a.check_topic(u, "c", Access::Read, "sensors/k/temp"));
        assert!(!a.check_topic(u, "c", Access::Write, "sensors/k/temp"));
        assert!(
            !a.check_topic(u, "c", Access::Read, "public/x"),
            "anonymous rules are not alice's"
        );
        assert!(
            a.check_topic(u, "c", Access::Write, "shared/x"),
            "access defaults to readwrite"
        );
        assert!(a.check_subscribe(u, "c", "sensors/+/temp"));
        assert!(a.check_subscribe(u, "c", "sensors/k/temp"));
        assert!(!a.check_subscribe(u, "c", "sensors/#"));
        assert!(a.check_subscribe(u, "c", "$share/g/alice/#"));
        // Deny wins even where a grant also matches.
        let b = Acl::parse("user x\ntopic read #\ntopic deny secret/#\n").unwrap();
        assert!(!b.check_topic(Some("x"), "c", Access::Read, "secret/a"));
        assert!(b.check_topic(Some("x"), "c", Access::Read, "open/a"));
        assert!(!b.check_subscribe(Some("x"), "c", "secret/+"));
        assert!(
            b.check_subscribe(Some("x"), "c", "#"),
            "filtered at delivery instead"
        );
        // A user without a section gets only the patterns.
        assert!(!a.check_topic(Some("carol"), "c", Access::Read, "public/x"));
        assert!(a.check_topic(Some("carol"), "c", Access::Read, "users/carol/1"));
        assert!(!a.check_topic(Some("carol"), "c", Access::Read, "users/alice/1"));
        // bob: write only.
        assert!(a.check_topic(Some("bob"), "c", Access::Write, "bob/out"));
        assert!(!a.check_subscribe(Some("bob"), "c", "bob/out"));
    }

    #[test]
    fn patterns_substitute_and_refuse_wildcards() {
        let a = acl();
        assert!(a.check_topic(Some("bob"), "dev1", Access::Read, "devices/dev1/t"));
        assert!(!a.check_topic(Some("bob"), "dev1", Access::Write, "devices/dev1/t"));
        assert!(!a.check_topic(Some("bob"), "dev1", Access::Read, "devices/dev2/t"));
        assert!(!a.check_subscribe(Some("bob"), "dev1", "devices/+/#"));
        // Values with wildcards or separators do not widen a pattern.
        assert!(!a.check_topic(Some("#"), "c", Access::Read, "users/x/1"));
        assert!(!a.check_subscribe(Some("a"), "+", "devices/+/#"));
        assert!(!a.check_topic(Some("a"), "x/y", Access::Read, "devices/x/y/z"));
    }

    #[test]
    fn covers_is_filter_inclusion() {
        assert!(covers("#", "a/+/b"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/#", "a/#"));
        assert!(covers("a/+", "a/+"));
        assert!(covers("a/+", "a/b"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+", "a/b/c"));
        assert!(!covers("#", "$SYS/x"));
        assert!(covers("$SYS/#", "$SYS/x/+"));
    }

    #[test]
    fn bad_lines_name_their_line_number() {
        let e = Acl::parse("topic read a\nfoo bar\n").unwrap_err();
        assert!(
            e.starts_with("line 2:") && e.contains("unknown keyword"),
            "{e}"
        );
        let e = Acl::parse("\nuser\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = Acl::parse("user a\n\n\ntopic read a/#/b\n").unwrap_err();
        assert!(
            e.starts_with("line 4:") && e.contains("invalid topic filter"),
            "{e}"
        );
        let e = Acl::parse("topic read\n").unwrap_err();
        assert!(e.starts_with("line 1:"), "{e}");
        let e = Acl::parse("topic read a b\n").unwrap_err();
        assert!(e.starts_with("line 1:"), "{e}");
        let e = Acl::parse("pattern write $share/g/%u\n").unwrap_err();
        assert!(e.starts_with("line 1:"), "{e}");
    }
}
