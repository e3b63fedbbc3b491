//! The cockpit's one page, server-rendered. Everything shown is escaped: usernames, claims and
//! repository names are grammar-limited, but descriptions are free text from Forge.

use std::fmt::Write;

use crate::Me;

/// HTML-escapes `s` for text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page for `me`.
pub fn render(me: &Me) -> String {
    let mut h = String::new();
    let user = escape(&me.user);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Hero OS cockpit — {user}</title></head>\n<body>\n\
         <h1>Hero OS cockpit</h1>\n<p id=\"signed-in\">Signed in as <strong id=\"user\">{user}</strong> \
         (provider {prv}, id {xid}{verified})</p>\n",
        prv = escape(&me.provider),
        xid = escape(&me.external_id),
        verified = if me.verified { ", signed assertion verified" } else { ", UNSIGNED dev mode" },
    );
    if let Some(ctx) = &me.context {
        let _ = writeln!(
            h,
            "<p>Context: <code id=\"context\">{}</code></p>",
            escape(ctx)
        );
    }
    h.push_str("<h2>Claims</h2>\n<ul id=\"claims\">\n");
    for c in &me.claims {
        let _ = writeln!(h, "<li><code>{}</code></li>", escape(c));
    }
    h.push_str("</ul>\n<h2>My Forge repositories</h2>\n");
    let _ = writeln!(
        h,
        "<p id=\"token-source\" data-source=\"{src}\">Listed with {desc}.</p>",
        src = match me.repositories.token {
            crate::TokenSource::PassedThrough => "passed_through",
            crate::TokenSource::Stored => "stored",
            crate::TokenSource::None => "none",
        },
        desc = escape(me.repositories.token.describe()),
    );
    if let Some(e) = &me.repositories.error {
        let _ = writeln!(h, "<p id=\"repos-error\">{}</p>", escape(e));
    }
    h.push_str("<ul id=\"repos\">\n");
    for r in &me.repositories.repos {
        // Forge's `html_url` becomes a link only when it is one: escaping keeps it inside the attribute, but a
        // `javascript:` URL would still run on click.
        let lower = r.html_url.to_ascii_lowercase();
        let name = if lower.starts_with("https://") || lower.starts_with("http://") {
            format!(
                "<a href=\"{}\">{}</a>",
                escape(&r.html_url),
                escape(&r.full_name)
            )
        } else {
            escape(&r.full_name)
        };
        let _ = writeln!(
            h,
            "<li>{name}{private}{desc}</li>",
            private = if r.private { " (private)" } else { "" },
            desc = if r.description.is_empty() {
                String::new()
            } else {
                format!(" — {}", escape(&r.description))
            },
        );
    }
    if me.repositories.repos.is_empty() && me.repositories.error.is_none() {
        h.push_str("<li id=\"no-repos\">none</li>\n");
    }
    h.push_str("</ul>\n<p><a href=\"/oauth/logout\">Sign out</a></p>\n</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repos::Repo;
    use crate::{Me, RepoList, TokenSource};

    #[test]
    fn only_http_urls_become_links() {
        let repo = |url: &str| Repo {
            full_name: "carol/r".into(),
            description: String::new(),
            private: false,
            html_url: url.into(),
        };
        let me = Me {
            user: "carol".into(),
            claims: vec![],
            provider: "forge".into(),
            external_id: "1".into(),
            context: None,
            verified: true,
            repositories: RepoList {
                token: TokenSource::None,
                repos: [
                    "https://forge.example/carol/r",
                    "HTTP://forge.example/x",
                    "javascript:alert(1)",
                    " JavaScript:alert(1)",
                    "data:text/html,x",
                    "//evil.example/",
                ]
                .iter()
                .map(|u| repo(u))
                .collect(),
                error: None,
            },
        };
        let page = render(&me);
        assert_eq!(
            page.matches("<a href=\"https://forge.example").count(),
            1,
            "{page}"
        );
        assert_eq!(
            page.matches("<a href=\"HTTP://forge.example").count(),
            1,
            "{page}"
        );
        for bad in ["javascript:", "JavaScript:", "data:", "//evil"] {
            assert!(!page.contains(&format!("href=\"{bad}")), "{bad}: {page}");
            assert!(!page.contains(&format!("href=\" {bad}")), "{bad}: {page}");
        }
    }
}
