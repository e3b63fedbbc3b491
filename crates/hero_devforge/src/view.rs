//! JSON shapes of the Forgejo API (swagger `User`, `AccessToken`, `OAuth2Application`), built the
//! way Forgejo's `services/convert` builds them, including what is hidden from whom.

use serde::Serialize;

use crate::db::{TokenRow, UserRow};
use crate::oauth::store::AppRow;
use crate::Config;

/// RFC 3339 in UTC with second precision, like Go's `time.Time` JSON for Forgejo timestamps.
pub fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Go's zero `time.Time`, what Forgejo prints for fields it hides.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The swagger `User` definition, field order as Forgejo emits it.
#[derive(Debug, Clone, Serialize)]
pub struct ApiUser {
    pub id: i64,
    pub login: String,
    pub login_name: String,
    pub source_id: i64,
    pub full_name: String,
    pub email: String,
    pub avatar_url: String,
    pub html_url: String,
    pub language: String,
    pub is_admin: bool,
    pub last_login: String,
    pub created: String,
    pub restricted: bool,
    pub active: bool,
    pub prohibit_login: bool,
    pub location: String,
    pub pronouns: String,
    pub website: String,
    pub description: String,
    pub visibility: String,
    pub followers_count: i64,
    pub following_count: i64,
    pub starred_repos_count: i64,
    pub username: String,
}

/// `convert.ToUser(user, doer)`: anonymous callers get the `noreply` placeholder e-mail; only the
/// user themself and site admins see `is_admin`, `login_name`, `last_login`, `active`, ….
pub fn user_json(cfg: &Config, u: &UserRow, doer: Option<&UserRow>) -> ApiUser {
    let signed = doer.is_some();
    let authed = doer.is_some_and(|d| d.is_admin || d.id == u.id);
    let host = url::Url::parse(&cfg.external_url)
        .ok()
        .and_then(|x| x.host_str().map(str::to_string))
        .unwrap_or_else(|| "localhost".into());
    let email = if signed {
        u.email.clone()
    } else {
        format!("{}@noreply.{host}", u.name.to_lowercase())
    };
    ApiUser {
        id: u.id,
        login: u.name.clone(),
        login_name: if authed {
            u.login_name.clone()
        } else {
            String::new()
        },
        source_id: if authed { u.source_id } else { 0 },
        full_name: u.full_name.clone(),
        email,
        avatar_url: format!("{}/assets/img/avatar_default.png", cfg.external_url),
        html_url: format!("{}/{}", cfg.external_url, u.name),
        language: if authed {
            u.language.clone()
        } else {
            String::new()
        },
        is_admin: authed && u.is_admin,
        last_login: if authed {
            rfc3339(u.last_login_unix)
        } else {
            GO_ZERO_TIME.to_string()
        },
        created: rfc3339(u.created_unix),
        restricted: u.restricted,
        active: authed && u.is_active,
        prohibit_login: authed && u.prohibit_login,
        location: u.location.clone(),
        pronouns: u.pronouns.clone(),
        website: u.website.clone(),
        description: u.description.clone(),
        visibility: u.visibility.clone(),
        followers_count: 0,
        following_count: 0,
        starred_repos_count: 0,
        username: u.name.clone(),
    }
}

/// The swagger `AccessToken` definition. `sha1` is the secret on creation and `""` in listings.
#[derive(Debug, Clone, Serialize)]
pub struct ApiAccessToken {
    pub id: i64,
    pub name: String,
    pub sha1: String,
    pub token_last_eight: String,
    pub scopes: Vec<String>,
}

pub fn token_json(t: &TokenRow, secret: Option<&str>) -> ApiAccessToken {
    ApiAccessToken {
        id: t.id,
        name: t.name.clone(),
        sha1: secret.unwrap_or_default().to_string(),
        token_last_eight: t.token_last_eight.clone(),
        scopes: t
            .scope
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

/// The swagger `OAuth2Application` definition. `client_secret` only on creation.
#[derive(Debug, Clone, Serialize)]
pub struct ApiOAuth2App {
    pub id: i64,
    pub name: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    pub confidential_client: bool,
    pub created: String,
}

pub fn oauth_app_json(a: &AppRow, secret: Option<&str>) -> ApiOAuth2App {
    ApiOAuth2App {
        id: a.id,
        name: a.name.clone(),
        client_id: a.client_id.clone(),
        client_secret: secret.unwrap_or_default().to_string(),
        redirect_uris: a.redirect_uris.clone(),
        confidential_client: a.confidential,
        created: rfc3339(a.created_unix),
    }
}

/// The swagger `Permission` definition.
#[derive(Debug, Clone, Serialize)]
pub struct ApiPermission {
    pub admin: bool,
    pub push: bool,
    pub pull: bool,
}

/// The swagger `InternalTracker` definition (present when issues are enabled).
#[derive(Debug, Clone, Serialize)]
pub struct ApiInternalTracker {
    pub enable_time_tracker: bool,
    pub allow_only_contributors_to_track_time: bool,
    pub enable_issue_dependencies: bool,
}

/// The swagger `Repository` definition: the fields Forgejo's `convert.ToRepo` always fills for a
/// plain (not mirrored, not forked) user repository, as the owner sees it. `parent`,
/// `external_tracker`, `external_wiki` and `repo_transfer` are `omitempty` pointers in Forgejo
/// and absent here, as they are there for such a repository.
#[derive(Debug, Clone, Serialize)]
pub struct ApiRepository {
    pub id: i64,
    pub owner: ApiUser,
    pub name: String,
    pub full_name: String,
    pub description: String,
    pub empty: bool,
    pub private: bool,
    pub fork: bool,
    pub template: bool,
    pub mirror: bool,
    pub size: i64,
    pub language: String,
    pub languages_url: String,
    pub html_url: String,
    pub url: String,
    pub link: String,
    pub ssh_url: String,
    pub clone_url: String,
    pub original_url: String,
    pub website: String,
    pub stars_count: i64,
    pub forks_count: i64,
    pub watchers_count: i64,
    pub open_issues_count: i64,
    pub open_pr_counter: i64,
    pub release_counter: i64,
    pub default_branch: String,
    pub archived: bool,
    pub created_at: String,
    pub updated_at: String,
    pub archived_at: String,
    pub permissions: ApiPermission,
    pub has_issues: bool,
    pub internal_tracker: ApiInternalTracker,
    pub has_wiki: bool,
    pub wiki_branch: String,
    pub globally_editable_wiki: bool,
    pub has_pull_requests: bool,
    pub has_projects: bool,
    pub has_releases: bool,
    pub has_packages: bool,
    pub has_actions: bool,
    pub ignore_whitespace_conflicts: bool,
    pub allow_merge_commits: bool,
    pub allow_rebase: bool,
    pub allow_rebase_explicit: bool,
    pub allow_squash_merge: bool,
    pub allow_fast_forward_only_merge: bool,
    pub allow_rebase_update: bool,
    pub default_delete_branch_after_merge: bool,
    pub default_merge_style: String,
    pub default_update_style: String,
    pub default_allow_maintainer_edit: bool,
    pub internal: bool,
    pub mirror_interval: String,
    pub mirror_updated: String,
    pub object_format_name: String,
    pub avatar_url: String,
    pub topics: Vec<String>,
}

/// `convert.ToRepo` for `owner`'s repository seen by its owner (full permissions).
pub fn repo_json(cfg: &Config, r: &crate::repos::RepoRow, owner: &UserRow) -> ApiRepository {
    let base = &cfg.external_url;
    let host = url::Url::parse(base)
        .ok()
        .and_then(|x| x.host_str().map(str::to_string))
        .unwrap_or_else(|| "localhost".into());
    let full = format!("{}/{}", owner.name, r.name);
    ApiRepository {
        id: r.id,
        owner: user_json(cfg, owner, Some(owner)),
        name: r.name.clone(),
        full_name: full.clone(),
        description: r.description.clone(),
        empty: r.empty,
        private: r.private,
        fork: false,
        template: r.template,
        mirror: false,
        size: 0,
        language: String::new(),
        languages_url: format!("{base}/api/v1/repos/{full}/languages"),
        html_url: format!("{base}/{full}"),
        url: format!("{base}/api/v1/repos/{full}"),
        link: String::new(),
        ssh_url: format!("git@{host}:{full}.git"),
        clone_url: format!("{base}/{full}.git"),
        original_url: String::new(),
        website: String::new(),
        stars_count: 0,
        forks_count: 0,
        watchers_count: 1,
        open_issues_count: 0,
        open_pr_counter: 0,
        release_counter: 0,
        default_branch: r.default_branch.clone(),
        archived: false,
        created_at: rfc3339(r.created_unix),
        updated_at: rfc3339(r.created_unix),
        archived_at: rfc3339(0),
        permissions: ApiPermission {
            admin: true,
            push: true,
            pull: true,
        },
        has_issues: true,
        internal_tracker: ApiInternalTracker {
            enable_time_tracker: true,
            allow_only_contributors_to_track_time: true,
            enable_issue_dependencies: true,
        },
        has_wiki: true,
        wiki_branch: r.default_branch.clone(),
        globally_editable_wiki: false,
        has_pull_requests: true,
        has_projects: true,
        has_releases: true,
        has_packages: true,
        has_actions: true,
        ignore_whitespace_conflicts: false,
        allow_merge_commits: true,
        allow_rebase: true,
        allow_rebase_explicit: true,
        allow_squash_merge: true,
        allow_fast_forward_only_merge: true,
        allow_rebase_update: true,
        default_delete_branch_after_merge: false,
        default_merge_style: "merge".to_string(),
        default_update_style: "merge".to_string(),
        default_allow_maintainer_edit: false,
        internal: false,
        mirror_interval: String::new(),
        mirror_updated: GO_ZERO_TIME.to_string(),
        object_format_name: r.object_format.clone(),
        avatar_url: String::new(),
        topics: Vec::new(),
    }
}
