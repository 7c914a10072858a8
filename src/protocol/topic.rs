//! Topic name and topic filter validation, shared-subscription syntax. CONTRACT:
//! - `validate_topic_name(&str) -> Result<(), DecodeError>`: non-empty, no `+`/`#`, no U+0000.
//! - `validate_topic_filter(&str) -> Result<(), DecodeError>`: non-empty, `#` only last and alone
//!   in its level, `+` alone in its level, no U+0000; `$share/{group}/{filter}` with a non-empty
//!   group without `+`, `#` or `/`, and a valid non-empty filter.
//! - `parse_shared(&str) -> Option<(&str /*group*/, &str /*filter*/)>` for `$share/...`.
