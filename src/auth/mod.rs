//! Authentication (password file, failed-login limit) and authorization (ACL file).
//!
//! Pure data and checks; the broker decides when to run them. Password verification is slow
//! on purpose and runs on the broker's verification threads (`broker/auth.rs`), never on a
//! worker's event loop.

pub mod acl;
pub mod passwd;
pub mod ratelimit;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

pub use acl::{Access, Acl, ClientAcl};
pub use passwd::PasswordFile;
pub use ratelimit::FailureLimiter;

use crate::config::Config;

/// Everything the workers need to authenticate and authorize clients.
#[derive(Debug)]
pub struct Auth {
    /// Loaded from `password_file`; None: user names are taken as given (not verified).
    passwords: RwLock<Option<Arc<PasswordFile>>>,
    /// Loaded from `acl_file`; None: every client may publish and subscribe to anything.
    acl: RwLock<Option<Arc<Acl>>>,
    /// Counts successful reloads; workers compare it with theirs to rebind their clients.
    generation: AtomicU64,
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
            passwords: RwLock::new(passwords),
            acl: RwLock::new(acl),
            generation: AtomicU64::new(0),
            limiter: Mutex::new(FailureLimiter::new(
                cfg.auth_fail_burst,
                Duration::from_secs(cfg.auth_fail_refill_secs),
            )),
        })
    }

    /// The password file in force (None: not configured).
    pub fn passwords(&self) -> Option<Arc<PasswordFile>> {
        self.passwords.read().clone()
    }

    /// Whether a password file is configured (fixed for the life of the broker).
    pub fn has_passwords(&self) -> bool {
        self.passwords.read().is_some()
    }

    /// The ACL in force (None: not configured).
    pub fn acl(&self) -> Option<Arc<Acl>> {
        self.acl.read().clone()
    }

    /// Bumped by every successful [`Auth::reload`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Reads the password and ACL files again (SIGHUP). Both are loaded before either is
    /// replaced: if one has an error, nothing changes and the error names the file and line.
    /// Only files configured at start are reloaded. CONNECTs verified from now on use the new
    /// password file; workers rebind every connection to the new ACL before their next input.
    pub fn reload(&self, cfg: &Config) -> Result<(), String> {
        let passwords = match (&cfg.password_file, self.has_passwords()) {
            (Some(p), true) => Some(Arc::new(PasswordFile::load(p)?)),
            _ => None,
        };
        let acl = match (&cfg.acl_file, self.acl.read().is_some()) {
            (Some(p), true) => Some(Arc::new(Acl::load(p)?)),
            _ => None,
        };
        if let Some(p) = passwords {
            tracing::info!(users = p.len(), "password file reloaded");
            *self.passwords.write() = Some(p);
        }
        if let Some(a) = acl {
            tracing::info!("ACL file reloaded");
            *self.acl.write() = Some(a);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}
