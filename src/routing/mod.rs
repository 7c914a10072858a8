//! Routing: which subscriptions a PUBLISH reaches, shared subscription groups, retained messages.
//!
//! Pure data structures (no I/O, no clock), single-threaded; the worker that owns one decides how
//! it is shared or replicated.
//!
//! - [`trie::SubscriptionTrie`]: topic filter -> subscribers, matched against a topic name without
//!   allocating.
//! - [`shared::SharedSubscriptions`]: `$share/{group}/{filter}` groups with round-robin picking.
//! - [`retained::RetainedStore`]: topic name -> retained message, visited by filter.
//! - [`remote::RemoteFilters`]: a worker's view of the other workers' filters, with counts.
//!
//! Matching rules (MQTT 3.1.1 section 4.7, MQTT 5.0 section 4.7), in one place
//! ([`filter_matches`] is the reference; the tries implement the same rules):
//! - Levels are separated by `/`; empty levels are levels (`a//b` has three, `/a` has two).
//! - `+` matches exactly one level (possibly empty); `#` matches any number of levels, including
//!   none: `sport/#` matches `sport` (the parent level) as well as `sport/x/y`.
//! - A filter whose first character is a wildcard (`+` or `#`) does not match a topic name whose
//!   first character is `$` (`$SYS/...`). `$SYS/#` does match `$SYS/x`.
//!
//! Callers validate filters and topic names first (`protocol::topic`); these structures accept
//! any string and treat `+`/`#` as wildcards only when they are a whole level (and `#` only as
//! the last one); anything else is a literal level.
pub mod levels;
pub mod remote;
pub mod retained;
pub mod shared;
pub mod trie;

pub use levels::{filter_matches, TooDeep, MAX_LEVELS};
pub use retained::RetainedStore;
pub use shared::{GroupId, SharedSubscriptions};
pub use trie::SubscriptionTrie;
