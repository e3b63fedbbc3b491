//! The claims model: a user's claims are the claims of the roles of every group they are in, transitively, plus the
//! reserved claims only the proxy emits (`users.<name>`, `groups.<name>`, legacy `admin`).

use std::collections::{BTreeSet, VecDeque};

use hero_identity::Claim;

/// Name of the reserved admin group, kept in sync with `users.is_admin`.
pub const ADMIN_GROUP: &str = "admin";

/// Breadth-first closure over "group is a member of group" edges, starting from the user's direct groups.
/// Cycle-safe (a visited set), so `a ∈ b ∈ a` terminates; `parents(g)` returns the groups `g` is a member of.
pub fn transitive_groups<I, F>(direct: I, mut parents: F) -> BTreeSet<String>
where
    I: IntoIterator<Item = String>,
    F: FnMut(&str) -> Vec<String>,
{
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    for g in direct {
        if seen.insert(g.clone()) {
            queue.push_back(g);
        }
    }
    while let Some(g) = queue.pop_front() {
        for p in parents(&g) {
            if seen.insert(p.clone()) {
                queue.push_back(p);
            }
        }
    }
    seen
}

/// Assembles the final claim set. Role claims that fail the grammar or use a reserved prefix are dropped (they can
/// only exist if the database was edited by hand; `roles.add_claim` refuses them).
pub fn assemble(
    username: &str,
    groups: &BTreeSet<String>,
    role_claims: impl IntoIterator<Item = String>,
) -> Vec<Claim> {
    let mut out: BTreeSet<Claim> = BTreeSet::new();
    if let Ok(c) = Claim::parse(&format!("users.{username}")) {
        out.insert(c);
    }
    for g in groups {
        if let Ok(c) = Claim::parse(&format!("groups.{g}")) {
            out.insert(c);
        }
    }
    if groups.contains(ADMIN_GROUP) {
        if let Ok(c) = Claim::parse(hero_identity::LEGACY_ADMIN_CLAIM) {
            out.insert(c);
        }
    }
    for rc in role_claims {
        if let Ok(c) = Claim::parse(&rc) {
            if !c.is_reserved() {
                out.insert(c);
            }
        }
    }
    out.into_iter().collect()
}

/// Validates a claim for `roles.add_claim`: grammar, and not under a reserved prefix.
pub fn validate_role_claim(claim: &str) -> Result<Claim, String> {
    let c = Claim::parse(claim).map_err(|e| e.to_string())?;
    if c.is_reserved() {
        return Err(format!(
            "{claim:?} is reserved: only the proxy emits users.*, groups.* and admin"
        ));
    }
    Ok(c)
}

/// Validates a group name (one claim segment, so `groups.<name>` is a valid claim).
pub fn validate_group_name(name: &str) -> Result<(), String> {
    if name.contains('.') {
        return Err(format!("group name {name:?} must be a single segment"));
    }
    Claim::parse(name).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn graph(edges: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (child, parent) in edges {
            m.entry(child.to_string())
                .or_default()
                .push(parent.to_string());
        }
        m
    }

    #[test]
    fn cycles_and_deep_nesting() {
        let g = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]);
        let got = transitive_groups(vec!["a".to_string()], |x| {
            g.get(x).cloned().unwrap_or_default()
        });
        assert_eq!(got.into_iter().collect::<Vec<_>>(), ["a", "b", "c", "d"]);
        // 10 000 levels deep: no recursion, no stack overflow.
        let names: Vec<String> = (0..10_000).map(|i| format!("g{i}")).collect();
        let got = transitive_groups(vec![names[0].clone()], |x| {
            let i: usize = x[1..].parse().unwrap();
            names.get(i + 1).cloned().into_iter().collect()
        });
        assert_eq!(got.len(), 10_000);
    }

    #[test]
    fn assemble_emits_reserved_and_drops_bad_role_claims() {
        let groups: BTreeSet<String> = ["admin".to_string(), "eng".to_string()].into();
        let c = assemble(
            "alice",
            &groups,
            vec![
                "dns.zone.write".into(),
                "users.bob".into(),
                "a.b.c.d.e.f.g.h.i".into(),
            ],
        );
        let s: Vec<&str> = c.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            s,
            [
                "admin",
                "dns.zone.write",
                "groups.admin",
                "groups.eng",
                "users.alice"
            ]
        );
    }

    #[test]
    fn role_claim_validation() {
        assert!(validate_role_claim("dns.zone.write").is_ok());
        assert!(validate_role_claim("a.b.c.d.e.f.g.h").is_ok());
        assert!(validate_role_claim("a.b.c.d.e.f.g.h.i").is_err());
        assert!(validate_role_claim("users.alice").is_err());
        assert!(validate_role_claim("groups.admin").is_err());
        assert!(validate_role_claim("admin").is_err());
        assert!(validate_role_claim("eng.*").is_err());
        assert!(validate_group_name("a.b").is_err());
    }

    proptest! {
        /// BFS closure equals reachability computed by a naive fixpoint, on random graphs with cycles.
        #[test]
        fn bfs_equals_fixpoint(edges in prop::collection::vec((0u8..12, 0u8..12), 0..40), start in prop::collection::vec(0u8..12, 0..4)) {
            let mut g: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (a, b) in &edges {
                g.entry(format!("g{a}")).or_default().push(format!("g{b}"));
            }
            let direct: Vec<String> = start.iter().map(|s| format!("g{s}")).collect();
            let got = transitive_groups(direct.clone(), |x| g.get(x).cloned().unwrap_or_default());
            let mut want: BTreeSet<String> = direct.into_iter().collect();
            loop {
                let before = want.len();
                let add: Vec<String> = want.iter().flat_map(|x| g.get(x).cloned().unwrap_or_default()).collect();
                want.extend(add);
                if want.len() == before { break; }
            }
            prop_assert_eq!(got, want);
        }
    }
}
