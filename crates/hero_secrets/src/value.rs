use zeroize::Zeroizing;

/// A secret value: wiped from memory on drop, printed as `SecretValue(***)`, never `Display`ed,
/// so it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> SecretValue {
        SecretValue(Zeroizing::new(value.into()))
    }

    /// The plain value. Call sites that use it are the places to review for leaks.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(***)")
    }
}

impl From<String> for SecretValue {
    fn from(s: String) -> Self {
        SecretValue::new(s)
    }
}
