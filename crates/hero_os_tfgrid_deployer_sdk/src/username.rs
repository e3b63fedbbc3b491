//! Username rules. A username is a Forge login *and* the source of the DNS label of the person's
//! demo URL (`<label>.<node domain>`; on the grid the label is the username without `-`, decided
//! with every other grid name in the backends crate's `grid_names`, whose tests walk every valid
//! username), so it must satisfy both, and we want exactly one spelling per person, hence
//! lowercase only. Checked before any network call, by server, CLI and dashboard.
//!
//! Rules, in the order they are checked (the first broken one is reported):
//! 1. not empty, at most [`MAX_LEN`] characters (Forgejo's limit);
//! 2. ASCII only;
//! 3. lowercase only;
//! 4. only `a-z`, `0-9` and `-` (a DNS label; Forgejo also allows `.` and `_`, a hostname label
//!    does not), except that names starting with [`TEST_PREFIX`] may use `_` in that prefix;
//! 5. starts with a letter or digit, does not end with `-`;
//! 6. no `--` (Forgejo rejects runs of special characters);
//! 7. not digits only: the CLI takes a user by id or by name, and `42` must mean one person;
//! 8. not one of Forgejo's reserved names;
//! 9. does not start with `deployer-test-`, whose grid name would collide with a test name.
//!
//! Grid resource names must match `^[a-zA-Z0-9_]+$`: see [`grid_name`].

use std::fmt;

/// Forgejo's maximum username length.
pub const MAX_LEN: usize = 40;

/// Prefix of throw-away users for end-to-end runs against a real Forge.
pub const TEST_PREFIX: &str = "deployer_test_";

/// Names Forgejo refuses (`models/user/user.go`, `reservedUsernames`) that our charset can express.
pub const RESERVED: &[&str] = &[
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
    "forgejo-actions",
    "ghost",
    "gitea-actions",
    "issues",
    "login",
    "metrics",
    "milestones",
    "new",
    "notifications",
    "org",
    "pulls",
    "raw",
    "repo",
    "repo-avatars",
    "search",
    "user",
    "v2",
];

/// The rule a username broke. `Display` is the message shown to the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsernameError {
    Empty,
    TooLong { len: usize },
    NotAscii,
    Uppercase,
    BadCharacter { ch: char },
    BadStart,
    BadEnd,
    DoubleHyphen,
    DigitsOnly,
    Reserved,
    CollidesWithTestPrefix,
}

impl UsernameError {
    /// A short stable rule id, e.g. for the dashboard's inline validation.
    pub fn rule(&self) -> &'static str {
        match self {
            UsernameError::Empty => "empty",
            UsernameError::TooLong { .. } => "too_long",
            UsernameError::NotAscii => "not_ascii",
            UsernameError::Uppercase => "uppercase",
            UsernameError::BadCharacter { .. } => "bad_character",
            UsernameError::BadStart => "bad_start",
            UsernameError::BadEnd => "bad_end",
            UsernameError::DoubleHyphen => "double_hyphen",
            UsernameError::DigitsOnly => "digits_only",
            UsernameError::Reserved => "reserved",
            UsernameError::CollidesWithTestPrefix => "test_prefix_collision",
        }
    }
}

impl fmt::Display for UsernameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsernameError::Empty => write!(f, "username is empty"),
            UsernameError::TooLong { len } => {
                write!(f, "username is {len} characters long; Forge allows at most {MAX_LEN}")
            }
            UsernameError::NotAscii => write!(f, "username must be ASCII (it becomes a DNS label)"),
            UsernameError::Uppercase => write!(f, "username must be lowercase"),
            UsernameError::BadCharacter { ch } => write!(
                f,
                "username may only contain a-z, 0-9 and '-' (found {ch:?}); it becomes a DNS label"
            ),
            UsernameError::BadStart => write!(f, "username must start with a letter or a digit"),
            UsernameError::BadEnd => write!(f, "username must not end with '-'"),
            UsernameError::DoubleHyphen => write!(f, "username must not contain '--'"),
            UsernameError::DigitsOnly => write!(
                f,
                "username must not be digits only (a number names a user by id)"
            ),
            UsernameError::Reserved => write!(f, "username is reserved by Forge"),
            UsernameError::CollidesWithTestPrefix => write!(
                f,
                "usernames starting with 'deployer-test-' are not allowed; test users use the prefix '{TEST_PREFIX}'"
            ),
        }
    }
}

impl std::error::Error for UsernameError {}

/// Checks every rule; returns the first one broken.
pub fn validate(name: &str) -> Result<(), UsernameError> {
    if name.is_empty() {
        return Err(UsernameError::Empty);
    }
    let len = name.chars().count();
    if len > MAX_LEN {
        return Err(UsernameError::TooLong { len });
    }
    if !name.is_ascii() {
        return Err(UsernameError::NotAscii);
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(UsernameError::Uppercase);
    }
    let body = name.strip_prefix(TEST_PREFIX).unwrap_or(name);
    if body.is_empty() {
        return Err(UsernameError::BadEnd);
    }
    if let Some(ch) = body
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(UsernameError::BadCharacter { ch });
    }
    // The part after the test prefix too: `deployer_test_-x` holds `_-`, a run of special characters Forgejo
    // refuses.
    if name.starts_with('-') || body.starts_with('-') {
        return Err(UsernameError::BadStart);
    }
    if name.ends_with('-') {
        return Err(UsernameError::BadEnd);
    }
    if name.contains("--") {
        return Err(UsernameError::DoubleHyphen);
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UsernameError::DigitsOnly);
    }
    if RESERVED.contains(&name) {
        return Err(UsernameError::Reserved);
    }
    if name.starts_with("deployer-test-") {
        return Err(UsernameError::CollidesWithTestPrefix);
    }
    Ok(())
}

/// True for throw-away end-to-end test users.
pub fn is_test_user(name: &str) -> bool {
    name.starts_with(TEST_PREFIX)
}

/// The grid resource name (`^[a-zA-Z0-9_]+$`) for a valid username: `-` becomes `_`.
///
/// Injective over valid usernames: `_` never appears in a valid username except in the test
/// prefix, and names that would map onto that prefix are refused by rule 8.
pub fn grid_name(valid_username: &str) -> String {
    valid_username.replace('-', "_")
}

/// The DNS label (host name part) for a valid username: `_` (only in the test prefix) becomes
/// `-`, so `deployer_test_run1` is served at `deployer-test-run1.<domain>`, a valid host name.
///
/// Injective over valid usernames for the same reason as [`grid_name`]: ordinary names never
/// start with `deployer-test-` (rule 8), so no two usernames share a label.
pub fn host_label(valid_username: &str) -> String {
    valid_username.replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_labels_are_valid_dns_labels_and_distinct() {
        let names = [
            "alice",
            "jan-de-vries",
            "7up",
            "deployer_test_run1",
            "deployer_test_a-b",
        ];
        let mut seen = std::collections::HashSet::new();
        for n in names {
            assert_eq!(validate(n), Ok(()), "{n}");
            let l = host_label(n);
            assert!(
                l.len() <= 63
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-'),
                "{l}"
            );
            assert!(seen.insert(l), "{n}");
        }
        assert_eq!(host_label("deployer_test_run1"), "deployer-test-run1");
        // The label a test user gets cannot be taken by an ordinary name.
        assert!(validate("deployer-test-run1").is_err());
    }

    #[test]
    fn accepts_ordinary_and_test_names() {
        for ok in [
            "alice",
            "a",
            "jan-de-vries",
            "user42",
            "7up",
            "42a",
            "deployer_test_run1",
            "deployer_test_42",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn names_the_broken_rule() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            (&"a".repeat(41), "too_long"),
            ("jürgen", "not_ascii"),
            ("Alice", "uppercase"),
            ("a.b", "bad_character"),
            ("a_b", "bad_character"),
            ("..", "bad_character"),
            ("a b", "bad_character"),
            ("-abc", "bad_start"),
            ("abc-", "bad_end"),
            ("a--b", "double_hyphen"),
            ("42", "digits_only"),
            ("0", "digits_only"),
            ("2024", "digits_only"),
            ("admin", "reserved"),
            ("ghost", "reserved"),
            ("deployer-test-x", "test_prefix_collision"),
            ("deployer_test_", "bad_end"),
            ("deployer_test_-x", "bad_start"),
            ("deployer_test_A", "uppercase"),
        ];
        for (name, rule) in cases {
            let err = validate(name).unwrap_err();
            assert_eq!(err.rule(), *rule, "{name:?}: {err}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn grid_names_match_the_grid_pattern() {
        for ok in ["alice", "jan-de-vries", "deployer_test_run1"] {
            let g = grid_name(ok);
            assert!(
                g.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{g}"
            );
        }
        assert_eq!(grid_name("jan-de-vries"), "jan_de_vries");
    }
}
