//! Claims: one caller at a time per key, for work that spans a write, an outside call and another
//! write, where no sqlite transaction can stay open across the outside call.
//!
//! `create_user` is such work: it reads the row, asks Forge to create the account with a
//! password it stored, mints a token, and only then marks the row active. Two callers of one name
//! that ran it side by side would each store their own password in the one slot, one would lose
//! Forge's name race and (its password refused) delete the slot the other needs. A claim makes the
//! second caller wait for the first and then see its result (`already_exists`, or a pending record
//! to resume). Claims live with the [`Db`](super::Db) handle because their scope is the database:
//! one server holds a data dir (see `DataDirLock`), so one process is every caller there is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The keys claimed on one database.
#[derive(Default)]
pub struct Claims {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

/// Held while the claim is; dropping it lets the next waiter in.
pub struct Claim {
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Claims {
    /// Claims `key`, waiting at most `bound` for an earlier holder; `None` when it still holds it.
    pub async fn claim(&self, key: &str, bound: Duration) -> Option<Claim> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            // Entries of keys nobody holds or waits for anymore (their mutex is gone).
            locks.retain(|_, held| held.strong_count() > 0);
            match locks.get(key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        tokio::time::timeout(bound, lock.lock_owned())
            .await
            .ok()
            .map(|held| Claim { _held: held })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_claim_waits_for_the_first_and_other_keys_do_not() {
        let claims = Arc::new(Claims::default());
        let first = claims.claim("a", Duration::from_secs(5)).await.unwrap();
        assert!(claims.claim("a", Duration::from_millis(20)).await.is_none());
        assert!(claims.claim("b", Duration::from_millis(20)).await.is_some());
        let waiter = {
            let claims = claims.clone();
            tokio::spawn(async move { claims.claim("a", Duration::from_secs(10)).await.is_some() })
        };
        drop(first);
        assert!(waiter.await.unwrap());
        // Nothing is kept for keys nobody holds.
        let _c = claims.claim("c", Duration::from_secs(1)).await.unwrap();
        assert!(claims.locks.lock().unwrap().len() <= 2);
    }
}
