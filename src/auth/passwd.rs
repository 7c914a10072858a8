//! The password file: one `username:hash` per line, `hash` an Argon2id PHC string
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), as written by `ringmq passwd`.
//! Blank lines and lines starting with `#` are ignored. A user name may not contain `:` or
//! white space and may appear once.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Parsed password file: user name -> PHC hash string (validated at load time).
#[derive(Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, String>,
}

impl std::fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the hashes.
        f.debug_struct("PasswordFile")
            .field("users", &self.users.len())
            .finish()
    }
}

fn check_username(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty user name".into());
    }
    if name.contains(':') || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "user name {name:?} may not contain ':', white space or control characters"
        ));
    }
    Ok(())
}

impl PasswordFile {
    /// Parse the text of a password file. Errors name the (1-based) line.
    pub fn parse(text: &str) -> Result<PasswordFile, String> {
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, hash)) = line.split_once(':') else {
                return Err(format!("line {n}: expected USERNAME:HASH"));
            };
            check_username(name).map_err(|e| format!("line {n}: {e}"))?;
            PasswordHash::new(hash).map_err(|e| {
                format!("line {n}: user {name:?}: not a PHC hash string (use `ringmq passwd`): {e}")
            })?;
            if users.insert(name.to_string(), hash.to_string()).is_some() {
                return Err(format!("line {n}: user {name:?} appears twice"));
            }
        }
        Ok(PasswordFile { users })
    }

    pub fn load(path: &Path) -> Result<PasswordFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read password file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("password file {}: {e}", path.display()))
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Slow (Argon2: tens of milliseconds): never call it on a worker's event loop.
    /// An unknown user costs the same as a wrong password (verified against a dummy hash),
    /// so the time taken does not tell which user names exist.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(h) => verify_hash(h, password),
            None => {
                let _ = verify_hash(dummy_hash(), password);
                false
            }
        }
    }
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(b"ringmq-dummy-password").expect("hashing works"))
}

/// Does `password` match the PHC string `hash`?
pub fn verify_hash(hash: &str, password: &[u8]) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Argon2id with the crate's defaults (m = 19 MiB, t = 2, p = 1: OWASP's recommendation) and
/// a random 16-byte salt, as a PHC string.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash: {e}"))
}

/// Add or replace `user` in the password file at `path` (created if missing, mode 0600),
/// keeping every other line as it was. The file is replaced atomically (temporary file +
/// rename).
pub fn set_password(path: &Path, user: &str, password: &[u8]) -> Result<(), String> {
    check_username(user)?;
    if password.is_empty() {
        return Err("empty password".into());
    }
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    // Refuse to rewrite a file we could not load afterwards.
    PasswordFile::parse(&old).map_err(|e| format!("{}: {e}", path.display()))?;
    let entry = format!("{user}:{}", hash_password(password)?);
    let mut out = String::with_capacity(old.len() + entry.len() + 1);
    let mut replaced = false;
    for line in old.lines() {
        let is_user = line
            .trim()
            .split_once(':')
            .is_some_and(|(n, _)| n == user && !line.trim().starts_with('#'));
        if is_user {
            out.push_str(&entry);
            replaced = true;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if !replaced {
        out.push_str(&entry);
        out.push('\n');
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(out.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

/// The password as read from stdin: the first line, without its line ending.
pub fn password_from_reader(mut r: impl std::io::BufRead) -> Result<Vec<u8>, String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.is_empty() {
        return Err("empty password on stdin".into());
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash_password(b"s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let f = PasswordFile::parse(&format!("# users\n\nalice:{h}\n")).unwrap();
        assert_eq!(f.len(), 1);
        assert!(f.verify("alice", b"s3cret"));
        assert!(!f.verify("alice", b"s3cret "));
        assert!(!f.verify("bob", b"s3cret"));
        // Same password, different salt.
        assert_ne!(h, hash_password(b"s3cret").unwrap());
    }

    #[test]
    fn bad_lines_name_their_line_number() {
        let h = hash_password(b"x").unwrap();
        let e = PasswordFile::parse(&format!("alice:{h}\nnocolon\n")).unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = PasswordFile::parse("# c\nbob:plaintext\n").unwrap_err();
        assert!(e.starts_with("line 2:") && e.contains("PHC"), "{e}");
        let e = PasswordFile::parse(&format!("a:{h}\n\na:{h}\n")).unwrap_err();
        assert!(e.starts_with("line 3:") && e.contains("twice"), "{e}");
        let e = PasswordFile::parse(&format!(":{h}\n")).unwrap_err();
        assert!(e.starts_with("line 1:") && e.contains("empty"), "{e}");
        let e = PasswordFile::parse(&format!("a b:{h}\n")).unwrap_err();
        assert!(e.starts_with("line 1:"), "{e}");
    }

    #[test]
    fn set_password_adds_and_replaces() {
        let dir = std::env::temp_dir().join(format!("ringmq-passwd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("passwd");
        let _ = std::fs::remove_file(&path);
        set_password(&path, "alice", b"one").unwrap();
        set_password(&path, "bob", b"two").unwrap();
        set_password(&path, "alice", b"three").unwrap();
        let f = PasswordFile::load(&path).unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.verify("alice", b"three"));
        assert!(!f.verify("alice", b"one"));
        assert!(f.verify("bob", b"two"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(set_password(&path, "a:b", b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn password_from_stdin_strips_the_line_ending() {
        assert_eq!(password_from_reader(&b"pw\r\nrest"[..]).unwrap(), b"pw");
        assert_eq!(password_from_reader(&b"pw"[..]).unwrap(), b"pw");
        assert!(password_from_reader(&b"\n"[..]).is_err());
    }
}
