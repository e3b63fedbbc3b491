//! Access-token scopes (`models/auth/access_token_scope.go`): parsing, normalisation (dedup, write
//! implies read, the full write set becomes `all`) and the per-route check.

/// Scope categories in Forgejo's canonical order (the order normalised scopes are listed in).
pub const CATEGORIES: &[&str] = &[
    "activitypub",
    "admin",
    "misc",
    "notification",
    "organization",
    "package",
    "issue",
    "repository",
    "user",
];

/// Access level of a category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    None,
    Read,
    Write,
}

/// A parsed, normalised scope set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub public_only: bool,
    levels: [Level; 9],
}

/// A scope word that Forgejo does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid access token scope: {0}")]
pub struct InvalidScope(pub String);

impl Scope {
    /// Every category at write level.
    pub fn all() -> Self {
        Self {
            public_only: false,
            levels: [Level::Write; 9],
        }
    }

    /// True when nothing at all is granted.
    pub fn is_empty(&self) -> bool {
        !self.public_only && self.levels.iter().all(|l| *l == Level::None)
    }

    fn apply(&mut self, word: &str) -> Result<(), InvalidScope> {
        match word {
            "all" => self.levels = [Level::Write; 9],
            "public-only" => self.public_only = true,
            _ => {
                let (lvl, cat) = word
                    .split_once(':')
                    .ok_or_else(|| InvalidScope(word.to_string()))?;
                let level = match lvl {
                    "read" => Level::Read,
                    "write" => Level::Write,
                    _ => return Err(InvalidScope(word.to_string())),
                };
                let idx = CATEGORIES
                    .iter()
                    .position(|c| *c == cat)
                    .ok_or_else(|| InvalidScope(word.to_string()))?;
                self.levels[idx] = self.levels[idx].max(level);
            }
        }
        Ok(())
    }

    /// Parses scope words; each item may itself be comma-separated (Forgejo joins with `,`).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, InvalidScope> {
        let mut s = Self {
            public_only: false,
            levels: [Level::None; 9],
        };
        for item in items {
            for word in item.as_ref().split(',') {
                let word = word.trim();
                if word.is_empty() {
                    continue;
                }
                s.apply(word)?;
            }
        }
        Ok(s)
    }

    /// Parses the stored comma-separated form.
    pub fn parse_stored(s: &str) -> Result<Self, InvalidScope> {
        Self::parse(&[s])
    }

    /// Forgejo's OAuth rule: keep the words that are valid API scopes, drop the rest (OIDC words);
    /// if nothing remains the token is unrestricted (`all`).
    pub fn from_oauth_scope_string(scope: &str) -> Self {
        let mut s = Self {
            public_only: false,
            levels: [Level::None; 9],
        };
        for word in scope.split([' ', ',']).filter(|w| !w.is_empty()) {
            let _ignored_unknown = s.apply(word);
        }
        if s.is_empty() {
            Self::all()
        } else {
            s
        }
    }

    /// Normalised list: `public-only` first, then `all` or per-category `write:`/`read:`.
    pub fn to_vec(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.public_only {
            out.push("public-only".to_string());
        }
        if self.levels.iter().all(|l| *l == Level::Write) {
            out.push("all".to_string());
            return out;
        }
        for (cat, level) in CATEGORIES.iter().zip(self.levels.iter()) {
            match level {
                Level::Write => out.push(format!("write:{cat}")),
                Level::Read => out.push(format!("read:{cat}")),
                Level::None => {}
            }
        }
        out
    }

    /// The stored form (comma-separated normalised list).
    pub fn to_stored(&self) -> String {
        self.to_vec().join(",")
    }

    /// Whether `level` on `category` is granted (write implies read).
    pub fn allows(&self, category: &str, level: Level) -> bool {
        CATEGORIES
            .iter()
            .position(|c| *c == category)
            .is_some_and(|i| self.levels[i] >= level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_forgejo() {
        let s = Scope::parse(&["read:user", "write:user", "read:user", "read:issue"]).unwrap();
        assert_eq!(s.to_vec(), vec!["read:issue", "write:user"]);
        let all_writes: Vec<String> = CATEGORIES.iter().map(|c| format!("write:{c}")).collect();
        assert_eq!(Scope::parse(&all_writes).unwrap().to_vec(), vec!["all"]);
        assert_eq!(
            Scope::parse(&["all", "read:user"]).unwrap().to_vec(),
            vec!["all"]
        );
        assert_eq!(
            Scope::parse(&["write:admin,read:misc"]).unwrap().to_vec(),
            vec!["write:admin", "read:misc"]
        );
        assert!(Scope::parse(&["read:nope"]).is_err());
        assert!(Scope::parse(&["bogus"]).is_err());
        assert!(Scope::parse::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn oauth_scope_strings() {
        assert_eq!(
            Scope::from_oauth_scope_string("openid profile email groups read:user").to_vec(),
            vec!["read:user"]
        );
        assert_eq!(
            Scope::from_oauth_scope_string("openid profile email").to_vec(),
            vec!["all"]
        );
    }

    #[test]
    fn allows_write_implies_read() {
        let s = Scope::parse(&["write:user"]).unwrap();
        assert!(s.allows("user", Level::Read));
        assert!(s.allows("user", Level::Write));
        assert!(!s.allows("admin", Level::Read));
    }
}
