//! The embedded secret store: one encrypted file per slot.
//!
//! Layout under the store directory (created 0700):
//! * `master.key`: 32 random bytes, created 0600 with `O_EXCL` on first open;
//! * `slots/<context>/<name>…/<last>@sec`: `MAGIC ‖ key id (4) ‖ nonce (24) ‖
//!   XChaCha20-Poly1305(value)` with the slot name as associated data, so a file copied to another
//!   slot does not decrypt.
//!
//! **One slot, one file.** Every segment but the last is a directory named as the segment; the last
//! is a file named `<segment>@sec`. `@` is outside the slot grammar, so a file name never equals a
//! directory name (`a/b` and `a/b@sec/c` cannot both exist, `a/b` and `a/b/c` live side by side),
//! and the suffix is appended, never replacing what follows a dot (`x.old` is not `x`). Stripping
//! the suffix gives the segments back: the mapping is injective (a property test holds it to that).
//! Stores written with the earlier `<last>.sec` naming (which aliased `x` and `x.old`) are renamed
//! in place when opened.
//!
//! Writes are atomic: temp file (`@tmp-…`, never a slot's name), fsync, rename, fsync of the
//! directory.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::{validate_slot, SecretError, SecretStore, SecretValue};

const MAGIC: &[u8; 6] = b"HSEC1\0";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = MAGIC.len() + 4 + NONCE_LEN;
/// Appended to a slot's last segment to name its file (see the module doc).
const FILE_SUFFIX: &str = "@sec";
/// Names of files being written; never a slot file name (no `@sec` suffix).
const TMP_PREFIX: &str = "@tmp-";
/// The suffix of the earlier layout, which `set_extension` put in place of a segment's own extension.
const LEGACY_SUFFIX: &str = ".sec";

/// Encrypted file store. Cheap to clone.
#[derive(Clone)]
pub struct FileSecretStore {
    inner: Arc<Inner>,
}

struct Inner {
    slots_dir: PathBuf,
    cipher: XChaCha20Poly1305,
    key_id: [u8; 4],
}

impl FileSecretStore {
    /// Opens the store in `dir`, creating it and its key on first use.
    ///
    /// Refuses to create a new key when encrypted slots already exist (the old key is lost or
    /// moved: a new one would silently orphan every secret) and refuses a key file of the wrong
    /// size or with group/other permissions.
    pub fn open(dir: &Path) -> Result<FileSecretStore, SecretError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| SecretError::io(dir, e))?;
        let slots_dir = dir.join("slots");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&slots_dir)
            .map_err(|e| SecretError::io(&slots_dir, e))?;
        let key_path = dir.join("master.key");
        let key = match read_key(&key_path)? {
            Some(key) => key,
            None => {
                let count = count_slots(&slots_dir)?;
                if count > 0 {
                    return Err(SecretError::KeyMissing {
                        path: key_path.display().to_string(),
                        dir: slots_dir.display().to_string(),
                        count,
                    });
                }
                create_key(&key_path)?
            }
        };
        let cipher =
            XChaCha20Poly1305::new_from_slice(&key[..]).map_err(|_| SecretError::KeyCorrupt {
                path: key_path.display().to_string(),
                reason: "unusable key".into(),
            })?;
        let key_id = key_id(&key[..]);
        migrate_legacy_names(&slots_dir)?;
        Ok(FileSecretStore {
            inner: Arc::new(Inner {
                slots_dir,
                cipher,
                key_id,
            }),
        })
    }

    /// The file of a (validated) slot: injective, see the module doc.
    fn path_of(&self, slot: &str) -> PathBuf {
        let mut path = self.inner.slots_dir.clone();
        let mut segments = slot.split('/').peekable();
        while let Some(segment) = segments.next() {
            if segments.peek().is_some() {
                path.push(segment);
            } else {
                path.push(format!("{segment}{FILE_SUFFIX}"));
            }
        }
        path
    }

    fn read_slot(&self, slot: &str) -> Result<Option<SecretValue>, SecretError> {
        validate_slot(slot)?;
        let path = self.path_of(slot);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SecretError::io(&path, e)),
        };
        let corrupt = |reason: &str| SecretError::Corrupt {
            slot: slot.to_owned(),
            reason: reason.to_owned(),
        };
        if data.len() < HEADER_LEN || &data[..MAGIC.len()] != MAGIC {
            return Err(corrupt("not a secret file (bad header)"));
        }
        let key_id = &data[MAGIC.len()..MAGIC.len() + 4];
        if key_id != self.inner.key_id {
            return Err(corrupt("encrypted with a different key"));
        }
        let nonce = XNonce::from_slice(&data[MAGIC.len() + 4..HEADER_LEN]);
        let plain = self
            .inner
            .cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &data[HEADER_LEN..],
                    aad: slot.as_bytes(),
                },
            )
            .map_err(|_| corrupt("authentication failed (tampered or truncated)"))?;
        let plain = Zeroizing::new(plain);
        let text = std::str::from_utf8(&plain).map_err(|_| corrupt("not UTF-8"))?;
        Ok(Some(SecretValue::new(text)))
    }

    fn write_slot(&self, slot: &str, value: &str) -> Result<(), SecretError> {
        validate_slot(slot)?;
        let path = self.path_of(slot);
        let parent = path.parent().unwrap_or(&self.inner.slots_dir).to_path_buf();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .map_err(|e| SecretError::io(&parent, e))?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .inner
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: slot.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Corrupt {
                slot: slot.to_owned(),
                reason: "encryption failed".into(),
            })?;
        let mut file_bytes = Vec::with_capacity(HEADER_LEN + sealed.len());
        file_bytes.extend_from_slice(MAGIC);
        file_bytes.extend_from_slice(&self.inner.key_id);
        file_bytes.extend_from_slice(&nonce);
        file_bytes.extend_from_slice(&sealed);
        atomic_write(&path, &file_bytes)
    }

    fn remove_slot(&self, slot: &str) -> Result<bool, SecretError> {
        validate_slot(slot)?;
        let path = self.path_of(slot);
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(parent) = path.parent() {
                    sync_dir(parent)?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(SecretError::io(&path, e)),
        }
    }

    fn list_slots(&self, prefix: &str) -> Result<Vec<String>, SecretError> {
        let mut out = Vec::new();
        walk(&self.inner.slots_dir, &mut Vec::new(), &mut out)?;
        out.retain(|s| s.starts_with(prefix));
        out.sort();
        Ok(out)
    }
}

#[async_trait::async_trait]
impl SecretStore for FileSecretStore {
    async fn get(&self, slot: &str) -> Result<Option<SecretValue>, SecretError> {
        let this = self.clone();
        let slot = slot.to_owned();
        blocking(move || this.read_slot(&slot)).await
    }

    async fn set(&self, slot: &str, value: &str) -> Result<(), SecretError> {
        let this = self.clone();
        let slot = slot.to_owned();
        let value = Zeroizing::new(value.to_owned());
        blocking(move || this.write_slot(&slot, &value)).await
    }

    async fn delete(&self, slot: &str) -> Result<bool, SecretError> {
        let this = self.clone();
        let slot = slot.to_owned();
        blocking(move || this.remove_slot(&slot)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SecretError> {
        let this = self.clone();
        let prefix = prefix.to_owned();
        blocking(move || this.list_slots(&prefix)).await
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SecretError> + Send + 'static,
) -> Result<T, SecretError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SecretError::Io {
            path: "<worker>".into(),
            source: std::io::Error::other(e.to_string()),
        })?
}

fn read_key(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, SecretError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SecretError::io(path, e)),
    };
    let mode = file
        .metadata()
        .map_err(|e| SecretError::io(path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(SecretError::KeyCorrupt {
            path: path.display().to_string(),
            reason: format!(
                "permissions {:o} allow group/other access; chmod 600 it",
                mode & 0o777
            ),
        });
    }
    let mut key = Zeroizing::new(Vec::new());
    file.read_to_end(&mut key)
        .map_err(|e| SecretError::io(path, e))?;
    if key.len() != KEY_LEN {
        return Err(SecretError::KeyCorrupt {
            path: path.display().to_string(),
            reason: format!("expected {KEY_LEN} bytes, found {}", key.len()),
        });
    }
    Ok(Some(key))
}

fn create_key(path: &Path) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let mut key = Zeroizing::new(vec![0u8; KEY_LEN]);
    rand::rngs::OsRng.fill_bytes(&mut key);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| SecretError::io(path, e))?;
    file.write_all(&key).map_err(|e| SecretError::io(path, e))?;
    file.sync_all().map_err(|e| SecretError::io(path, e))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(key)
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), SecretError> {
    let parent = path
        .parent()
        .ok_or_else(|| SecretError::io(path, std::io::Error::other("no parent directory")))?;
    let mut suffix = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut suffix);
    let tmp = parent.join(format!("{TMP_PREFIX}{}", hex_lite(&suffix)));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(SecretError::io(path, e));
    }
    sync_dir(parent)
}

fn sync_dir(dir: &Path) -> Result<(), SecretError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SecretError::io(dir, e))
}

fn count_slots(dir: &Path) -> Result<usize, SecretError> {
    let mut out = Vec::new();
    walk(dir, &mut Vec::new(), &mut out)?;
    Ok(out.len())
}

fn walk(dir: &Path, segments: &mut Vec<String>, out: &mut Vec<String>) -> Result<(), SecretError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(SecretError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| SecretError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let file_type = entry.file_type().map_err(|e| SecretError::io(dir, e))?;
        // Only names the layout can produce: a directory named as a segment, a file named
        // `<segment>@sec`. Temp files and anything else put there by hand are not slots.
        if file_type.is_dir() && is_segment(&name) {
            segments.push(name);
            walk(&entry.path(), segments, out)?;
            segments.pop();
        } else if let Some(stem) = name.strip_suffix(FILE_SUFFIX).filter(|s| is_segment(s)) {
            if file_type.is_file() && !segments.is_empty() {
                let mut slot = segments.join("/");
                slot.push('/');
                slot.push_str(stem);
                out.push(slot);
            }
        }
    }
    Ok(())
}

/// A segment of the slot grammar (see [`crate::validate_slot`]).
fn is_segment(name: &str) -> bool {
    crate::slot::check_segment(name).is_ok()
}

/// Renames files of the earlier layout (`<segment>.sec`) to `<segment>@sec`. The earlier name
/// cannot tell `x` from `x.old` (both were `x.sec`); it is given to `x`, the slot it was most
/// likely written for; a file written for `x.old` then fails to decrypt as `x` (its slot name is
/// its associated data), exactly as reading `x` failed before. An existing new-layout file wins
/// and the old one is left where it is.
fn migrate_legacy_names(dir: &Path) -> Result<(), SecretError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(SecretError::io(dir, e)),
    };
    let mut renamed = false;
    for entry in entries {
        let entry = entry.map_err(|e| SecretError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let file_type = entry.file_type().map_err(|e| SecretError::io(dir, e))?;
        if file_type.is_dir() {
            if is_segment(&name) {
                migrate_legacy_names(&entry.path())?;
            }
            continue;
        }
        let Some(stem) = name.strip_suffix(LEGACY_SUFFIX) else {
            continue;
        };
        if !file_type.is_file() || !is_segment(stem) || name.starts_with(".tmp-") {
            continue;
        }
        let target = dir.join(format!("{stem}{FILE_SUFFIX}"));
        if target.exists() {
            continue;
        }
        fs::rename(entry.path(), &target).map_err(|e| SecretError::io(&target, e))?;
        renamed = true;
    }
    if renamed {
        sync_dir(dir)?;
    }
    Ok(())
}

fn hex_lite(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 4-byte key id stored in each file. Not a security property: it only tells "encrypted with
/// another key" apart from "tampered" in error messages (FNV-1a over the key).
fn key_id(key: &[u8]) -> [u8; 4] {
    let mut h: u32 = 0x811c_9dc5;
    for b in key {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, FileSecretStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSecretStore::open(&dir.path().join("secrets")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn round_trip_list_delete() {
        let (_dir, s) = store();
        assert_eq!(s.get("deployer/forge_admin_token").await.unwrap(), None);
        s.set("deployer/forge_admin_token", "tok-123")
            .await
            .unwrap();
        s.set("deployer/users/1/forge_token", "t1").await.unwrap();
        s.set("cockpit/X", "x").await.unwrap();
        assert_eq!(
            s.get("deployer/forge_admin_token")
                .await
                .unwrap()
                .unwrap()
                .expose(),
            "tok-123"
        );
        assert_eq!(
            s.list("deployer/").await.unwrap(),
            ["deployer/forge_admin_token", "deployer/users/1/forge_token"]
        );
        assert!(s.delete("cockpit/X").await.unwrap());
        assert!(!s.delete("cockpit/X").await.unwrap());
        assert_eq!(s.list("").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn values_are_not_on_disk_in_clear_and_key_is_0600() {
        let (dir, s) = store();
        s.set("deployer/users/7/initial_password", "PLAINTEXT-SENTINEL-42")
            .await
            .unwrap();
        let root = dir.path().join("secrets");
        let mode = fs::metadata(root.join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut files = Vec::new();
        walk_files(&root, &mut files);
        assert!(files.len() >= 2);
        for f in files {
            let bytes = fs::read(&f).unwrap();
            assert!(
                !bytes.windows(21).any(|w| w == b"PLAINTEXT-SENTINEL-42"),
                "{f:?} holds the secret in clear"
            );
        }
    }

    fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk_files(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }

    #[tokio::test]
    async fn reopen_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        FileSecretStore::open(&root)
            .unwrap()
            .set("a/b", "v")
            .await
            .unwrap();
        let again = FileSecretStore::open(&root).unwrap();
        assert_eq!(again.get("a/b").await.unwrap().unwrap().expose(), "v");
    }

    #[tokio::test]
    async fn missing_key_with_existing_secrets_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        FileSecretStore::open(&root)
            .unwrap()
            .set("a/b", "v")
            .await
            .unwrap();
        fs::remove_file(root.join("master.key")).unwrap();
        let err = FileSecretStore::open(&root).err().unwrap();
        assert!(
            matches!(err, SecretError::KeyMissing { count: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("restore"));
    }

    #[tokio::test]
    async fn corrupt_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        FileSecretStore::open(&root).unwrap();
        fs::write(root.join("master.key"), b"short").unwrap();
        let err = FileSecretStore::open(&root).err().unwrap();
        assert!(matches!(err, SecretError::KeyCorrupt { .. }), "{err}");
        fs::set_permissions(root.join("master.key"), fs::Permissions::from_mode(0o644)).unwrap();
        let err = FileSecretStore::open(&root).err().unwrap();
        assert!(err.to_string().contains("permissions"), "{err}");
    }

    #[tokio::test]
    async fn tampered_or_moved_file_does_not_decrypt() {
        let (dir, s) = store();
        s.set("a/one", "v1").await.unwrap();
        let root = dir.path().join("secrets/slots");
        fs::copy(root.join("a/one@sec"), root.join("a/two@sec")).unwrap();
        assert!(matches!(
            s.get("a/two").await,
            Err(SecretError::Corrupt { .. })
        ));
        let mut bytes = fs::read(root.join("a/one@sec")).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(root.join("a/one@sec"), bytes).unwrap();
        assert!(matches!(
            s.get("a/one").await,
            Err(SecretError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn invalid_slots_are_rejected_before_io() {
        let (_dir, s) = store();
        assert!(matches!(
            s.set("../etc/passwd", "x").await,
            Err(SecretError::InvalidSlot { .. })
        ));
    }
}
