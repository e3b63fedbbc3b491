//! Forgejo's input rules for user creation (`models/user/user.go`, `modules/validation`), reproduced
//! so that clients learn here what the real forge would refuse.

/// Maximum username length (`binding:"MaxSize(40)"`).
pub const MAX_USERNAME_LEN: usize = 40;
/// Maximum e-mail length (`binding:"MaxSize(254)"`).
pub const MAX_EMAIL_LEN: usize = 254;
/// `MIN_PASSWORD_LENGTH` default.
pub const MIN_PASSWORD_LEN: usize = 8;

/// Forgejo's `reservedUsernames`.
pub const RESERVED_NAMES: &[&str] = &[
    ".",
    "..",
    ".well-known",
    "admin",
    "api",
    "assets",
    "attachments",
    "avatar",
    "avatars",
    "captcha",
    "commits",
    "debug",
    "devtest",
    "error",
    "explore",
    "favicon.ico",
    "forgejo-actions",
    "ghost",
    "gitea-actions",
    "issues",
    "login",
    "manifest.json",
    "metrics",
    "milestones",
    "new",
    "notifications",
    "org",
    "pulls",
    "raw",
    "repo",
    "repo-avatars",
    "robots.txt",
    "search",
    "serviceworker.js",
    "ssh_info",
    "swagger.v1.json",
    "user",
    "v2",
];

/// Forgejo's `reservedUserPatterns` (`*` is a prefix wildcard).
pub const RESERVED_PATTERNS: &[&str] = &["*.keys", "*.gpg", "*.rss", "*.atom", "*.png"];

/// Why a username is refused, with Forgejo's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Binding: empty.
    #[error("[Username]: Required")]
    Required,
    /// Binding: longer than 40.
    #[error("[Username]: MaxSize")]
    TooLong,
    /// Binding: the `Username` rule (charset, runs of `-._`, leading/trailing specials).
    #[error("[Username]: invalid username")]
    Invalid,
    #[error("name is reserved [name: {0}]")]
    Reserved(String),
    #[error("name pattern is not allowed [pattern: {0}]")]
    PatternNotAllowed(String),
}

/// Checks the `binding:"Required;Username;MaxSize(40)"` part: `^[\da-zA-Z][-.\w]*$`, no consecutive
/// `-`, `.` or `_`, and no trailing `-`, `.` or `_`.
pub fn check_username_binding(name: &str) -> Result<(), UsernameError> {
    if name.is_empty() {
        return Err(UsernameError::Required);
    }
    if name.chars().count() > MAX_USERNAME_LEN {
        return Err(UsernameError::TooLong);
    }
    let bytes = name.as_bytes();
    let is_special = |b: u8| b == b'-' || b == b'.' || b == b'_';
    if !bytes[0].is_ascii_alphanumeric() {
        return Err(UsernameError::Invalid);
    }
    if !bytes
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || is_special(b))
    {
        return Err(UsernameError::Invalid);
    }
    if bytes
        .windows(2)
        .any(|w| is_special(w[0]) && is_special(w[1]))
    {
        return Err(UsernameError::Invalid);
    }
    if bytes.last().copied().is_some_and(is_special) {
        return Err(UsernameError::Invalid);
    }
    Ok(())
}

/// Checks `IsUsableUsername`: the reserved list and patterns (case-insensitive).
pub fn check_username_usable(name: &str) -> Result<(), UsernameError> {
    let lower = name.to_lowercase();
    if RESERVED_NAMES.contains(&lower.as_str()) {
        return Err(UsernameError::Reserved(name.to_string()));
    }
    for pat in RESERVED_PATTERNS {
        if let Some(suffix) = pat.strip_prefix('*') {
            if lower.ends_with(suffix) {
                return Err(UsernameError::PatternNotAllowed((*pat).to_string()));
            }
        }
    }
    Ok(())
}

/// Both username checks in Forgejo's order.
pub fn check_username(name: &str) -> Result<(), UsernameError> {
    check_username_binding(name)?;
    check_username_usable(name)
}

/// The `binding:"Required;Email;MaxSize(254)"` check, approximated: one `@`, non-empty local part,
/// a domain with a dot-free or dotted label set, no whitespace.
pub fn check_email(email: &str) -> Result<(), String> {
    if email.is_empty() {
        return Err("[Email]: Required".into());
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err("[Email]: MaxSize".into());
    }
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err("[Email]: Email".into())
    }
}

/// Forgejo's local-password rule: shorter than `MIN_PASSWORD_LENGTH` (empty included) is
/// `PasswordIsRequired` (400). Complexity and pwned checks are off by default and not modelled.
pub fn check_password(password: &str) -> Result<(), &'static str> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        Err("PasswordIsRequired")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_rules() {
        for ok in ["alice", "a", "a.b-c_d", "A1", "0abc", &"a".repeat(40)] {
            assert_eq!(check_username(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_username(""), Err(UsernameError::Required));
        assert_eq!(check_username(&"a".repeat(41)), Err(UsernameError::TooLong));
        for bad in [
            "-a", "_a", ".a", "a--b", "a._b", "a-", "a.", "a_", "ä", "a b", "a/b",
        ] {
            assert_eq!(check_username(bad), Err(UsernameError::Invalid), "{bad}");
        }
        assert_eq!(
            check_username("Admin"),
            Err(UsernameError::Reserved("Admin".into()))
        );
        assert_eq!(
            check_username("bob.keys"),
            Err(UsernameError::PatternNotAllowed("*.keys".into()))
        );
    }

    #[test]
    fn email_and_password_rules() {
        assert!(check_email("a@x.org").is_ok());
        assert!(check_email("").is_err());
        assert!(check_email("nope").is_err());
        assert!(check_email("a@").is_err());
        assert_eq!(check_password("short"), Err("PasswordIsRequired"));
        assert!(check_password("longenough").is_ok());
    }
}
