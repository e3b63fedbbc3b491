//! Time and randomness are parameters of the core, so tests can fix them.

use rand::RngCore;

/// The current time. Production uses [`SystemClock`]; tests use a fixed or stepping clock.
pub trait Clock: Send + Sync {
    /// Unix seconds, UTC.
    fn now(&self) -> i64;

    /// Unix milliseconds, UTC. Clocks without sub-second precision may keep the default.
    fn now_ms(&self) -> i64 {
        self.now().saturating_mul(1000)
    }
}

/// Wall-clock time.
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    #[allow(clippy::disallowed_methods)]
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A source of cryptographically secure random bytes.
pub trait Random: Send + Sync {
    fn fill(&self, buf: &mut [u8]);

    /// A uniformly random number in `0..bound` (rejection sampling, no modulo bias).
    fn below(&self, bound: u32) -> u32 {
        if bound <= 1 {
            return 0;
        }
        let zone = u32::MAX - (u32::MAX % bound);
        loop {
            let mut b = [0u8; 4];
            self.fill(&mut b);
            let v = u32::from_le_bytes(b);
            if v < zone {
                return v % bound;
            }
        }
    }
}

/// The operating system's CSPRNG.
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&self, buf: &mut [u8]) {
        rand::rngs::OsRng.fill_bytes(buf);
    }
}

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A `len`-character alphanumeric password with at least one lowercase letter, one uppercase
/// letter and one digit, so it passes Forgejo's complexity settings that alphanumerics can meet.
pub fn alphanumeric_password(random: &dyn Random, len: usize) -> zeroize::Zeroizing<String> {
    loop {
        let password: String = (0..len)
            .map(|_| char::from(ALPHANUMERIC[random.below(ALPHANUMERIC.len() as u32) as usize]))
            .collect();
        let password = zeroize::Zeroizing::new(password);
        let has = |f: fn(&char) -> bool| password.chars().any(|c| f(&c));
        if len < 3
            || (has(char::is_ascii_lowercase)
                && has(char::is_ascii_uppercase)
                && has(char::is_ascii_digit))
        {
            return password;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_32_alphanumerics_with_every_class() {
        for _ in 0..200 {
            let p = alphanumeric_password(&OsRandom, 32);
            assert_eq!(p.len(), 32);
            assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
            assert!(p.chars().any(|c| c.is_ascii_lowercase()));
            assert!(p.chars().any(|c| c.is_ascii_uppercase()));
            assert!(p.chars().any(|c| c.is_ascii_digit()));
        }
        assert_ne!(
            *alphanumeric_password(&OsRandom, 32),
            *alphanumeric_password(&OsRandom, 32)
        );
    }
}
