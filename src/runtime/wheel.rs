//! Hashed timing wheel. CONTRACT (implemented by the wheel work): see the work's prompt.
