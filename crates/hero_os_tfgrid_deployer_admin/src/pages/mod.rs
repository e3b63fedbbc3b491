//! One module per page. Handlers take the signed-in [`crate::auth::Admin`] as an extension.

pub mod actions;
pub mod audit;
pub mod batch;
pub mod create_user;
pub mod errors;
pub mod invitation;
pub mod jobs;
pub mod timeline;
pub mod user_detail;
pub mod users;
pub mod vm_care;

use hero_os_tfgrid_deployer_sdk::{ClientError, ErrorKind};

/// Treats "the server does not serve this method yet" (and only that) as absent data, so the
/// user pages keep working against a server without the provisioning pipeline.
pub fn optional<T>(r: Result<T, ClientError>) -> Result<Option<T>, ClientError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == Some(ErrorKind::MethodNotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Builds `path?query` from serialisable pairs, skipping empty values.
pub fn href(path: &str, pairs: &[(&str, String)]) -> String {
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    match serde_urlencoded::to_string(pairs) {
        Ok(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    }
}
