use crate::SecretError;

/// Longest slot name accepted.
pub const MAX_SLOT_LEN: usize = 200;

/// Checks a slot name: `<context>/<name>[/<name>…]`, segments of `A-Z a-z 0-9 _ - .`, no empty,
/// `.` or `..` segment, at most [`MAX_SLOT_LEN`] bytes. The file store maps segments to
/// directories, so this grammar is also what keeps a slot inside the store.
pub fn validate_slot(slot: &str) -> Result<(), SecretError> {
    let fail = |reason| {
        Err(SecretError::InvalidSlot {
            slot: slot.chars().take(MAX_SLOT_LEN).collect(),
            reason,
        })
    };
    if slot.len() > MAX_SLOT_LEN {
        return fail("longer than 200 bytes");
    }
    let segments: Vec<&str> = slot.split('/').collect();
    if segments.len() < 2 {
        return fail("must be <context>/<name>");
    }
    for segment in segments {
        if let Err(reason) = check_segment(segment) {
            return fail(reason);
        }
    }
    Ok(())
}

/// One segment of the grammar; also what the file store accepts as a directory or file stem.
pub(crate) fn check_segment(segment: &str) -> Result<(), &'static str> {
    if segment.is_empty() {
        return Err("empty segment");
    }
    if segment == "." || segment == ".." {
        return Err("'.' and '..' segments are not allowed");
    }
    if !segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err("segments may only contain A-Z a-z 0-9 _ - .");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        for ok in [
            "deployer/forge_admin_token",
            "deployer/users/42/forge_token",
            "cockpit/FORGE_OAUTH_CLIENT_ID",
        ] {
            assert!(validate_slot(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "nocontext",
            "a//b",
            "/a/b",
            "a/b/",
            "a/../b",
            "a/./b",
            "a/b c",
            "a/ü",
            &format!("a/{}", "x".repeat(200)),
        ] {
            assert!(validate_slot(bad).is_err(), "{bad:?}");
        }
    }
}
