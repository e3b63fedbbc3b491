//! [`ForgeApps`] over HTTP: `/api/v1/user/applications/oauth2[/{id}]` with the admin token.
//! Paths and statuses as Forgejo v11/v12 (checked against the swagger through Prism in
//! `tests/forge_apps.rs`): 404 on get/patch/delete means the app is gone; a 403 naming a scope
//! means the token lacks it; list pages with `page`/`limit` until a short page.

use reqwest::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{decode, message, Auth, HttpForge};
use crate::forge::apps::{missing_scope, ForgeApps, OAuthApp, OAuthAppSpec, OAuthAppWithSecret};
use crate::forge::ForgeError;
use hero_secrets::SecretValue;

/// Forgejo's maximum page size (`MAX_RESPONSE_ITEMS` default 50).
const PAGE: usize = 50;
/// A bound on the walk, so a Forge that never returns a short page cannot loop us forever.
const MAX_PAGES: usize = 200;

#[derive(Deserialize)]
struct AppBody {
    id: i64,
    #[serde(default)]
    name: String,
    client_id: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    confidential_client: bool,
}

impl AppBody {
    fn app(&self) -> OAuthApp {
        OAuthApp {
            id: self.id,
            name: self.name.clone(),
            client_id: self.client_id.clone(),
            redirect_uris: self.redirect_uris.clone(),
            confidential: self.confidential_client,
        }
    }

    fn with_secret(self, status: u16) -> Result<OAuthAppWithSecret, ForgeError> {
        if self.client_secret.is_empty() {
            return Err(ForgeError::Protocol {
                status,
                message: "Forge returned the OAuth app without its client secret".into(),
            });
        }
        let app = self.app();
        Ok(OAuthAppWithSecret {
            app,
            secret: SecretValue::new(self.client_secret),
        })
    }
}

fn spec_body(spec: &OAuthAppSpec) -> serde_json::Value {
    json!({
        "name": spec.name,
        "redirect_uris": spec.redirect_uris,
        "confidential_client": spec.confidential,
    })
}

/// The failure for an unexpected status: 401/403 are the admin token's (a 403 naming a scope
/// says which one is missing), anything else is a protocol error.
async fn refused(response: Response) -> ForgeError {
    let status = response.status().as_u16();
    let message = message(response).await;
    match status {
        403 => match missing_scope(&message) {
            Some(scope) => ForgeError::AdminTokenScopeMissing { scope, message },
            None => ForgeError::AdminTokenRejected { status, message },
        },
        401 => ForgeError::AdminTokenRejected { status, message },
        _ => ForgeError::Protocol { status, message },
    }
}

#[async_trait::async_trait]
impl ForgeApps for HttpForge {
    async fn list_oauth_apps(&self) -> Result<Vec<OAuthApp>, ForgeError> {
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let path = format!("/user/applications/oauth2?page={page}&limit={PAGE}");
            let response = self.send(Method::GET, &path, Auth::Admin, None).await?;
            if response.status() != StatusCode::OK {
                return Err(refused(response).await);
            }
            let items: Vec<AppBody> = decode(response).await?;
            let short = items.len() < PAGE;
            out.extend(items.iter().map(AppBody::app));
            if short {
                return Ok(out);
            }
        }
        Err(ForgeError::Protocol {
            status: 200,
            message: format!(
                "more than {} OAuth apps listed; refusing to walk further",
                PAGE * MAX_PAGES
            ),
        })
    }

    async fn get_oauth_app(&self, id: i64) -> Result<Option<OAuthApp>, ForgeError> {
        let path = format!("/user/applications/oauth2/{id}");
        let response = self.send(Method::GET, &path, Auth::Admin, None).await?;
        match response.status() {
            StatusCode::OK => Ok(Some(decode::<AppBody>(response).await?.app())),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(refused(response).await),
        }
    }

    async fn create_oauth_app(
        &self,
        spec: &OAuthAppSpec,
    ) -> Result<OAuthAppWithSecret, ForgeError> {
        let response = self
            .send(
                Method::POST,
                "/user/applications/oauth2",
                Auth::Admin,
                Some(spec_body(spec)),
            )
            .await?;
        match response.status() {
            s @ (StatusCode::CREATED | StatusCode::OK) => {
                decode::<AppBody>(response).await?.with_secret(s.as_u16())
            }
            _ => Err(refused(response).await),
        }
    }

    async fn rotate_oauth_app(
        &self,
        id: i64,
        spec: &OAuthAppSpec,
    ) -> Result<Option<OAuthAppWithSecret>, ForgeError> {
        let path = format!("/user/applications/oauth2/{id}");
        let response = self
            .send(Method::PATCH, &path, Auth::Admin, Some(spec_body(spec)))
            .await?;
        match response.status() {
            StatusCode::OK => Ok(Some(decode::<AppBody>(response).await?.with_secret(200)?)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(refused(response).await),
        }
    }

    async fn delete_oauth_app(&self, id: i64) -> Result<bool, ForgeError> {
        let path = format!("/user/applications/oauth2/{id}");
        let response = self.send(Method::DELETE, &path, Auth::Admin, None).await?;
        match response.status() {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(refused(response).await),
        }
    }
}
