//! The sign-in gate of a VM's public URL, as `verify_health` proves it: an anonymous `GET /` must
//! end, after the SSO edge's own redirects on the VM's origin, at the Forge authorize endpoint with
//! this VM's OAuth client id and its callback. A 2xx is an open URL; a redirect anywhere else, or
//! with another client id, is a misconfigured (or someone else's) edge. The walk is bounded.

use reqwest::Url;

use super::agent::VmAgent;

/// Most redirects followed on the VM's own origin (hero_proxy makes one: `/` → `/oauth/login`).
const MAX_HOPS: usize = 4;

/// What the VM's gate must send an anonymous browser to.
pub struct Expected<'a> {
    /// The Forge issuer the VM was configured with.
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// `<public origin>/oauth/callback`, as registered for the app.
    pub callback: &'a str,
}

/// Walks the redirects of an anonymous `GET <public_url>`; returns the authorize endpoint
/// (without its query) it ended at, or why the URL is not gated as expected.
pub async fn check(
    agent: &dyn VmAgent,
    public_url: &str,
    connect_addr: Option<&str>,
    want: &Expected<'_>,
) -> Result<String, String> {
    let parse = |u: &str| Url::parse(u).map_err(|e| format!("bad URL {u}: {e}"));
    let start = parse(public_url)?;
    let issuer = parse(want.issuer)?;
    let mut url = start.join("/").map_err(|e| e.to_string())?;
    for _ in 0..MAX_HOPS {
        let answer = agent
            .http_get(url.as_str(), connect_addr)
            .await
            .map_err(|e| e.message)?;
        if (200..300).contains(&answer.status) {
            return Err(format!(
                "GET {url} answered {} to an anonymous request: the URL is open to anyone",
                answer.status
            ));
        }
        let location = match (answer.status, answer.location) {
            (300..=399, Some(l)) => l,
            (status, _) => {
                return Err(format!(
                    "GET {url} answered {status} to an anonymous request, not a sign-in redirect"
                ))
            }
        };
        let next = url
            .join(&location)
            .map_err(|e| format!("GET {url}: bad Location {location:?}: {e}"))?;
        if next.origin() == start.origin() {
            url = next;
            continue;
        }
        if next.origin() != issuer.origin() || !next.path().starts_with(issuer.path()) {
            return Err(format!(
                "GET {url} sent an anonymous browser to {}, not to the Forge sign-in at {}",
                without_query(&next),
                want.issuer
            ));
        }
        let param = |k: &str| {
            next.query_pairs()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.into_owned())
        };
        if param("client_id").as_deref() != Some(want.client_id) {
            return Err(format!(
                "the sign-in redirect carries client id {:?}, not this VM's {}",
                param("client_id").unwrap_or_default(),
                want.client_id
            ));
        }
        if let Some(cb) = param("redirect_uri") {
            if cb != want.callback {
                return Err(format!(
                    "the sign-in redirect returns to {cb}, not this VM's callback {}",
                    want.callback
                ));
            }
        }
        return Ok(without_query(&next));
    }
    Err(format!(
        "more than {MAX_HOPS} redirects on {} without reaching the Forge sign-in",
        start.origin().ascii_serialization()
    ))
}

fn without_query(u: &Url) -> String {
    let mut u = u.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use async_trait::async_trait;

    use super::*;
    use crate::provision::agent::{AttemptFn, HttpAnswer, LineFn, SshAccess};
    use crate::provision::steps::StepError;

    /// Answers from a table: (status, location) per URL.
    struct Table(HashMap<String, (u16, Option<String>)>);

    #[async_trait]
    impl VmAgent for Table {
        async fn wait_ssh(
            &self,
            _: &SshAccess<'_>,
            _: tokio::time::Instant,
            _: std::time::Duration,
            _: AttemptFn<'_>,
        ) -> Result<String, StepError> {
            unreachable!()
        }
        async fn upload(
            &self,
            _: &SshAccess<'_>,
            _: &str,
            _: &[u8],
            _: Option<u32>,
        ) -> Result<(), StepError> {
            unreachable!()
        }
        async fn run(
            &self,
            _: &SshAccess<'_>,
            _: &str,
            _: LineFn<'_>,
        ) -> Result<Option<u32>, StepError> {
            unreachable!()
        }
        async fn run_with_stdin(
            &self,
            _: &SshAccess<'_>,
            _: &str,
            _: &[u8],
            _: LineFn<'_>,
        ) -> Result<Option<u32>, StepError> {
            unreachable!()
        }
        async fn http_status(&self, _: &str, _: Option<&str>) -> Result<u16, StepError> {
            unreachable!()
        }
        async fn http_get(&self, url: &str, _: Option<&str>) -> Result<HttpAnswer, StepError> {
            let (status, location) = self.0.get(url).cloned().unwrap_or((404, None));
            Ok(HttpAnswer { status, location })
        }
    }

    const VM: &str = "http://carol.localhost:8088/";
    const WANT: Expected<'static> = Expected {
        issuer: "http://127.0.0.1:3000",
        client_id: "cid-1",
        callback: "http://carol.localhost:8088/oauth/callback",
    };

    fn table(rows: &[(&str, u16, Option<&str>)]) -> Table {
        Table(
            rows.iter()
                .map(|(u, s, l)| (u.to_string(), (*s, l.map(str::to_owned))))
                .collect(),
        )
    }

    fn login_to(authorize: &str) -> Table {
        table(&[
            (
                "http://carol.localhost:8088/",
                302,
                Some("/oauth/login?rd=%2F"),
            ),
            (
                "http://carol.localhost:8088/oauth/login?rd=%2F",
                302,
                Some(authorize),
            ),
        ])
    }

    #[tokio::test]
    async fn a_gated_url_ends_at_the_forge_with_this_vms_client() {
        let t = login_to("http://127.0.0.1:3000/login/oauth/authorize?client_id=cid-1&redirect_uri=http%3A%2F%2Fcarol.localhost%3A8088%2Foauth%2Fcallback&state=s");
        assert_eq!(
            check(&t, VM, None, &WANT).await.unwrap(),
            "http://127.0.0.1:3000/login/oauth/authorize"
        );
    }

    #[tokio::test]
    async fn every_other_ending_is_named() {
        let cases: Vec<(Table, &str)> = vec![
            (table(&[(VM, 200, None)]), "open to anyone"),
            (table(&[(VM, 502, None)]), "answered 502"),
            (table(&[(VM, 302, None)]), "answered 302"),
            (
                login_to("http://127.0.0.1:3000/login/oauth/authorize?client_id=other"),
                "client id \"other\"",
            ),
            (
                login_to("http://127.0.0.1:3000/login/oauth/authorize?state=x"),
                "client id \"\"",
            ),
            (
                login_to("https://evil.example/login/oauth/authorize?client_id=cid-1"),
                "not to the Forge sign-in",
            ),
            (
                login_to("http://127.0.0.1:3001/login/oauth/authorize?client_id=cid-1"),
                "not to the Forge sign-in",
            ),
            (
                login_to("http://127.0.0.1:3000/login/oauth/authorize?client_id=cid-1&redirect_uri=http%3A%2F%2Fbob.localhost%3A8088%2Foauth%2Fcallback"),
                "not this VM's callback",
            ),
            (table(&[(VM, 302, Some("/"))]), "more than 4 redirects"),
        ];
        for (t, want) in cases {
            let err = check(&t, VM, None, &WANT).await.unwrap_err();
            assert!(err.contains(want), "{err} (wanted {want})");
        }
    }
}
