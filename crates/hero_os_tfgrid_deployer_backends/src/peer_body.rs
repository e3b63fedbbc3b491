//! Bodies from HTTP peers the deployer does not control — gridproxy (a public third-party service), Forge,
//! hero_compute — read with a cap, and quoted in errors only as a short, printable excerpt.
//!
//! Why one place for both: an unbounded `text()`/`collect()` lets a broken or hostile peer grow the deployer's
//! memory without limit (a 30 s timeout is gigabytes on a fast link); and a body quoted verbatim into an error
//! travels into job rows, the audit log, the dashboard and the operator's terminal, where control characters (an
//! ANSI escape, a `\r` that rewrites the line, a bidi override) mislead and kilobytes of HTML hide the point.

use bytes::Bytes;
use http_body_util::BodyExt;

/// How much of a peer's text an error quotes, in characters.
pub const EXCERPT_CHARS: usize = 200;

/// How much of an error body is read to quote from (the rest is left unread: the connection is dropped).
pub const ERROR_BODY_READ: usize = 64 * 1024;

/// A body that could not be had whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerBodyError {
    #[error("the answer's body is longer than {limit} bytes, the most accepted")]
    TooLong { limit: usize },
    #[error("reading the answer's body failed: {0}")]
    Read(String),
}

/// The whole body of `resp`, or [`PeerBodyError::TooLong`] as soon as it passes `limit` bytes (a declared
/// `Content-Length` over the limit is refused before reading anything).
pub async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Bytes, PeerBodyError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(PeerBodyError::TooLong { limit });
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| PeerBodyError::Read(e.to_string()))?
    {
        if out.len() + chunk.len() > limit {
            return Err(PeerBodyError::TooLong { limit });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.into())
}

/// [`read_capped`] for a hyper body (hero_compute's socket client).
pub async fn collect_capped<B>(body: B, limit: usize) -> Result<Bytes, PeerBodyError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(PeerBodyError::TooLong { limit })
        }
        Err(e) => Err(PeerBodyError::Read(e.to_string())),
    }
}

/// At most [`ERROR_BODY_READ`] bytes of an error answer's body (a failed read gives what arrived). Never fails:
/// the status the caller already has is the error, the body only its detail.
pub async fn error_body(mut resp: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < ERROR_BODY_READ {
        match resp.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    out.truncate(ERROR_BODY_READ);
    out
}

/// [`error_body`] as an [`excerpt`].
pub async fn error_excerpt(resp: reqwest::Response) -> String {
    excerpt(&String::from_utf8_lossy(&error_body(resp).await))
}

/// `text` as one printable line of at most [`EXCERPT_CHARS`] characters (then `…`): runs of whitespace become one
/// space, control and invisible formatting characters (bidi overrides, zero-width ones) become `�`.
pub fn excerpt(text: &str) -> String {
    let mut out = String::new();
    let mut kept = 0;
    let mut pending_space = false;
    for c in text.trim().chars() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if kept >= EXCERPT_CHARS {
            out.push('…');
            break;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(if printable(c) { c } else { '\u{FFFD}' });
        kept += 1;
    }
    out
}

/// Not a control character (C0, DEL, C1) nor one of the invisible formatting characters that reorder or hide
/// text on a terminal or a page (Unicode general category Cf in the ranges that matter here).
pub(crate) fn printable(c: char) -> bool {
    !(c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_one_short_printable_line() {
        let cases: &[(&str, &str)] = &[
            ("  plain  ", "plain"),
            ("two\r\nlines\tand  spaces", "two lines and spaces"),
            (
                "\u{1b}[2J\u{1b}]0;owned\u{7}cleared",
                "\u{FFFD}[2J\u{FFFD}]0;owned\u{FFFD}cleared",
            ),
            ("file\u{202E}gpj.exe", "file\u{FFFD}gpj.exe"),
            ("zero\u{200B}width\u{FEFF}", "zero\u{FFFD}width\u{FFFD}"),
            ("c1\u{9b}31m", "c1\u{FFFD}31m"),
            ("del\u{7f}", "del\u{FFFD}"),
            ("", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(excerpt(raw), *want, "{raw:?}");
        }
        let long = "é".repeat(EXCERPT_CHARS + 50);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(
            excerpt(&"x".repeat(EXCERPT_CHARS)),
            "x".repeat(EXCERPT_CHARS)
        );
    }
}
