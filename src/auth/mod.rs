//! Authentication (password file, failed-login limit) and authorization (ACL file).
//!
//! Pure data and checks; the broker decides when to run them. Password verification is slow
//! on purpose and runs on the broker's verification threads (`broker/auth.rs`), never on a
//! worker's event loop.

pub mod acl;
pub mod passwd;
pub mod ratelimit;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

pub use acl::{Access, Acl, ClientAcl};
pub use passwd::PasswordFile;
pub use ratelimit::FailureLimiter;

use crate::config::Config;

/// Everything the workers need to authenticate and authorize clients.
#[derive(Debug)]
pub struct Auth {
    /// Loaded from `password_file`; None: user names are taken as given (not verified).
    pub passwords: Option<Arc<PasswordFile>>,
    /// Loaded from `acl_file`; None: every client may publish and subscribe to anything.
    pub acl: Option<Arc<Acl>>,
    pub allow_anonymous: bool,
    pub limiter: Mutex<FailureLimiter>,
}

impl Auth {
    /// Load the files the configuration names. Errors say which file and line.
    pub fn from_config(cfg: &Config) -> Result<Auth, String> {
        let passwords = match &cfg.password_file {
            Some(p) => Some(Arc::new(PasswordFile::load(p)?)),
            None => None,
        };
        let acl = match &cfg.acl_file {
            Some(p) => Some(Arc::new(Acl::load(p)?)),
            None => None,
        };
        if let (Some(p), Some(file)) = (&passwords, &cfg.password_file) {
            tracing::info!(users = p.len(), file = %file.display(), "password file loaded");
        }
        if acl.is_some() && passwords.is_none() {
            tracing::warn!(
                "acl_file without password_file: user names in CONNECT are not verified, \
                 so `user` sections trust whatever name a client sends"
            );
        }
        Ok(Auth {
            allow_anonymous: cfg.allow_anonymous(),
            passwords,
            acl,
            limiter: Mutex::new(FailureLimiter::new(
                cfg.auth_fail_burst,
                Duration::from_secs(cfg.auth_fail_refill_secs),
            )),
        })
    }
}
