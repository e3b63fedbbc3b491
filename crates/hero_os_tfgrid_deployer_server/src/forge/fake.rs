//! The one Forge fake of the workspace's tests and benchmarks (feature `test-support`): accounts
//! in memory, with switches for the failures tests need. The real contract is checked against
//! Forgejo's spec elsewhere (`tests/prism.rs`, the dev Forge); this fake only has to behave like
//! it for what the core relies on: `user_exists` finds what `create_user` made, a token needs the
//! account's password, an optional latency per call (the benchmark's L).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use hero_secrets::SecretValue;

use super::{ForgeApi, ForgeError, ForgeToken, ForgeUser, NewForgeUser};

/// How the fake answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Like Forge.
    #[default]
    Normal,
    /// Every account asked for exists (the benchmark's seeded users); creating one is a bug.
    EveryoneExists,
    /// Every call fails as if no admin token were set (a Forge that is never reached).
    NoAdminToken,
}

/// A wait before each answer (the benchmark injects its own timer).
pub type Delay = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// See the module docs.
#[derive(Default)]
pub struct FakeForge {
    mode: Mode,
    delay: Option<Delay>,
    /// Accounts and their passwords.
    pub users: Mutex<Vec<(ForgeUser, String)>>,
    /// The next N token requests fail as unreachable.
    pub token_failures_left: Mutex<u32>,
    /// Token requests are refused whatever the password (a Forge with basic authentication disabled).
    pub basic_auth_refused: Mutex<bool>,
    /// The next `set_password` fails as unreachable: `Some(true)` after changing the password (the answer was
    /// lost), `Some(false)` before.
    pub set_password_lost: Mutex<Option<bool>>,
    /// `password_works` fails as unreachable.
    pub password_check_unreachable: Mutex<bool>,
    /// Accounts created so far.
    pub creates: Mutex<u32>,
    /// OAuth apps of the admin account: (app, current secret); ids count from 1.
    pub apps: Mutex<Vec<(super::apps::OAuthApp, String)>>,
}

impl FakeForge {
    pub fn new() -> FakeForge {
        FakeForge::default()
    }

    pub fn with_mode(mode: Mode) -> FakeForge {
        FakeForge {
            mode,
            ..FakeForge::default()
        }
    }

    /// Every call takes `latency` first.
    pub fn with_latency(self, latency: Duration) -> FakeForge {
        self.with_delay(Arc::new(move || Box::pin(tokio::time::sleep(latency))))
    }

    /// Every call waits for `delay` first.
    pub fn with_delay(mut self, delay: Delay) -> FakeForge {
        self.delay = Some(delay);
        self
    }

    async fn call(&self) -> Result<(), ForgeError> {
        if let Some(delay) = &self.delay {
            delay().await;
        }
        match self.mode {
            Mode::NoAdminToken => Err(ForgeError::AdminTokenMissing { file: None }),
            _ => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl ForgeApi for FakeForge {
    async fn version(&self) -> Result<String, ForgeError> {
        self.call().await?;
        Ok("fake".into())
    }

    async fn user_exists(&self, username: &str) -> Result<Option<ForgeUser>, ForgeError> {
        self.call().await?;
        if self.mode == Mode::EveryoneExists {
            return Ok(Some(ForgeUser {
                id: 1,
                login: username.into(),
                email: String::new(),
                full_name: String::new(),
            }));
        }
        Ok(self
            .users
            .lock()
            .unwrap()
            .iter()
            .find(|(u, _)| u.login == username)
            .map(|(u, _)| u.clone()))
    }

    async fn create_user(&self, user: &NewForgeUser<'_>) -> Result<ForgeUser, ForgeError> {
        self.call().await?;
        if self.mode == Mode::EveryoneExists {
            return Err(ForgeError::Protocol {
                status: 500,
                message: "the fake's users are seeded; none is created".into(),
            });
        }
        let mut users = self.users.lock().unwrap();
        // Forgejo answers 422 "e-mail already in use", which the HTTP client reads as this.
        if users.iter().any(|(u, _)| u.email == user.email) {
            return Err(ForgeError::Conflict {
                reason: super::ConflictReason::EmailTaken,
                message: "e-mail already in use".into(),
            });
        }
        *self.creates.lock().unwrap() += 1;
        let forge_user = ForgeUser {
            id: users.len() as i64 + 100,
            login: user.username.into(),
            email: user.email.into(),
            full_name: user.full_name.unwrap_or_default().into(),
        };
        users.push((forge_user.clone(), user.password.expose().to_owned()));
        Ok(forge_user)
    }

    async fn generate_token_for(
        &self,
        username: &str,
        password: &SecretValue,
        token_name: &str,
        scopes: &[String],
    ) -> Result<ForgeToken, ForgeError> {
        self.call().await?;
        {
            let mut left = self.token_failures_left.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err(ForgeError::Unreachable {
                    url: "fake".into(),
                    reason: "connection reset".into(),
                });
            }
        }
        let ok = !*self.basic_auth_refused.lock().unwrap()
            && self
                .users
                .lock()
                .unwrap()
                .iter()
                .any(|(u, p)| u.login == username && p == password.expose());
        if !ok {
            return Err(ForgeError::UserCredentialsRejected {
                status: 401,
                message: "wrong password".into(),
            });
        }
        Ok(ForgeToken {
            id: 1,
            name: token_name.into(),
            secret: SecretValue::new(format!("token-for-{username}")),
            scopes: scopes.to_vec(),
        })
    }

    async fn set_password(&self, username: &str, password: &SecretValue) -> Result<(), ForgeError> {
        self.call().await?;
        let lost = self.set_password_lost.lock().unwrap().take();
        if lost != Some(false) {
            let mut users = self.users.lock().unwrap();
            let Some(entry) = users.iter_mut().find(|(u, _)| u.login == username) else {
                return Err(ForgeError::Protocol {
                    status: 404,
                    message: format!("user {username} does not exist"),
                });
            };
            entry.1 = password.expose().to_owned();
        }
        match lost {
            Some(_) => Err(ForgeError::Unreachable {
                url: "fake".into(),
                reason: "operation timed out".into(),
            }),
            None => Ok(()),
        }
    }

    async fn password_works(
        &self,
        username: &str,
        password: &SecretValue,
    ) -> Result<bool, ForgeError> {
        self.call().await?;
        if *self.password_check_unreachable.lock().unwrap() {
            return Err(ForgeError::Unreachable {
                url: "fake".into(),
                reason: "connection refused".into(),
            });
        }
        Ok(self
            .users
            .lock()
            .unwrap()
            .iter()
            .any(|(u, p)| u.login == username && p == password.expose()))
    }

    fn url(&self) -> &str {
        "http://fake.forge"
    }

    fn apps(&self) -> Option<&dyn super::apps::ForgeApps> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl super::apps::ForgeApps for FakeForge {
    async fn list_oauth_apps(&self) -> Result<Vec<super::apps::OAuthApp>, ForgeError> {
        self.call().await?;
        Ok(self
            .apps
            .lock()
            .unwrap()
            .iter()
            .map(|(a, _)| a.clone())
            .collect())
    }

    async fn get_oauth_app(&self, id: i64) -> Result<Option<super::apps::OAuthApp>, ForgeError> {
        self.call().await?;
        Ok(self
            .apps
            .lock()
            .unwrap()
            .iter()
            .find(|(a, _)| a.id == id)
            .map(|(a, _)| a.clone()))
    }

    async fn create_oauth_app(
        &self,
        spec: &super::apps::OAuthAppSpec,
    ) -> Result<super::apps::OAuthAppWithSecret, ForgeError> {
        self.call().await?;
        let mut apps = self.apps.lock().unwrap();
        let id = apps.iter().map(|(a, _)| a.id).max().unwrap_or(0) + 1;
        let app = super::apps::OAuthApp {
            id,
            name: spec.name.clone(),
            client_id: format!("fake-client-{id}"),
            redirect_uris: spec.redirect_uris.clone(),
            confidential: spec.confidential,
        };
        let secret = format!("fake-secret-{id}-1");
        apps.push((app.clone(), secret.clone()));
        Ok(super::apps::OAuthAppWithSecret {
            app,
            secret: SecretValue::new(secret),
        })
    }

    async fn rotate_oauth_app(
        &self,
        id: i64,
        spec: &super::apps::OAuthAppSpec,
    ) -> Result<Option<super::apps::OAuthAppWithSecret>, ForgeError> {
        self.call().await?;
        let mut apps = self.apps.lock().unwrap();
        let Some((app, secret)) = apps.iter_mut().find(|(a, _)| a.id == id) else {
            return Ok(None);
        };
        app.name = spec.name.clone();
        app.redirect_uris = spec.redirect_uris.clone();
        app.confidential = spec.confidential;
        let n: u32 = secret
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        *secret = format!("fake-secret-{id}-{}", n + 1);
        Ok(Some(super::apps::OAuthAppWithSecret {
            app: app.clone(),
            secret: SecretValue::new(secret.clone()),
        }))
    }

    async fn delete_oauth_app(&self, id: i64) -> Result<bool, ForgeError> {
        self.call().await?;
        let mut apps = self.apps.lock().unwrap();
        let before = apps.len();
        apps.retain(|(a, _)| a.id != id);
        Ok(apps.len() != before)
    }
}
