use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::{validate_slot, SecretError, SecretStore, SecretValue};

/// In-memory store for tests and throw-away runs. Not durable.
#[derive(Default)]
pub struct MemorySecretStore {
    slots: Mutex<BTreeMap<String, SecretValue>>,
}

impl MemorySecretStore {
    pub fn new() -> MemorySecretStore {
        MemorySecretStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SecretValue>> {
        // A panic while holding this lock cannot leave the map half-written; keep going.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl SecretStore for MemorySecretStore {
    async fn get(&self, slot: &str) -> Result<Option<SecretValue>, SecretError> {
        validate_slot(slot)?;
        Ok(self.lock().get(slot).cloned())
    }

    async fn set(&self, slot: &str, value: &str) -> Result<(), SecretError> {
        validate_slot(slot)?;
        self.lock().insert(slot.to_owned(), SecretValue::new(value));
        Ok(())
    }

    async fn delete(&self, slot: &str) -> Result<bool, SecretError> {
        validate_slot(slot)?;
        Ok(self.lock().remove(slot).is_some())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SecretError> {
        Ok(self
            .lock()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
