//! A client id as the broker keeps it: one allocation shared by every table that names the
//! client (the session, the worker's session slot, the ownership table), 8 bytes in each.
//!
//! A `ByteString` is 32 bytes inline, and its first clone allocates a shared header for the
//! buffer. Each idle connection used to hold three of them (156 bytes with the header); a
//! `ClientId` is one `Arc` around the `ByteString`: three handles of 8 bytes and one allocation
//! of 48. The string itself is never cloned on the connect path, so no shared header is made.
//! `Deref<Target = ByteString>` keeps every reader of `&ByteString` as it was.
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use bytestring::ByteString;

/// A shared, immutable client id. Equality and hashing are those of the string, and it
/// borrows as `str`, so a map keyed by `ClientId` is looked up with a `&str`.
#[derive(Clone)]
pub struct ClientId(Arc<ByteString>);

impl ClientId {
    pub fn new(id: ByteString) -> ClientId {
        ClientId(Arc::new(id))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Both handles share one allocation (not just equal contents).
    pub fn same(&self, other: &ClientId) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Deref for ClientId {
    type Target = ByteString;
    fn deref(&self) -> &ByteString {
        &self.0
    }
}

impl Borrow<str> for ClientId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Hash for ClientId {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl PartialEq for ClientId {
    fn eq(&self, other: &ClientId) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ClientId {}

impl PartialEq<str> for ClientId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ClientId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<ByteString> for ClientId {
    fn from(id: ByteString) -> ClientId {
        ClientId::new(id)
    }
}

impl From<&str> for ClientId {
    fn from(id: &str) -> ClientId {
        ClientId::new(ByteString::from(id))
    }
}

impl std::fmt::Debug for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
