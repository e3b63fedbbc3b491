//! Which methods are local-only is declared next to each method (`Method::LOCAL_ONLY`); this
//! checks the declaration against the wire types themselves: every method whose result carries a
//! secret-bearing field, or whose params write a secret, is local-only. The one exception,
//! `create_user`, must be callable over TCP and withholds its password there (its handler, proved
//! in the server's `tcp_identity` test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use hero_os_tfgrid_deployer_sdk::methods::{describe_all, LOCAL_ONLY_METHOD_NAMES};
use schemars::gen::SchemaGenerator;
use serde_json::Value;

/// Field names that carry a secret anywhere in the wire types.
const SECRET_FIELDS: &[&str] = &["initial_password", "new_password", "private_key", "value"];

/// Every property name in `v` and in the definitions it refers to.
fn property_names(
    v: &Value,
    defs: &serde_json::Map<String, Value>,
    seen: &mut BTreeSet<String>,
    out: &mut BTreeSet<String>,
) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let name = r.rsplit('/').next().unwrap().to_owned();
                if seen.insert(name.clone()) {
                    if let Some(d) = defs.get(&name) {
                        property_names(d, defs, seen, out);
                    }
                }
            }
            if let Some(Value::Object(props)) = m.get("properties") {
                out.extend(props.keys().cloned());
            }
            for child in m.values() {
                property_names(child, defs, seen, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|c| property_names(c, defs, seen, out)),
        _ => {}
    }
}

fn fields(schema: fn(&mut SchemaGenerator) -> schemars::schema::Schema) -> BTreeSet<String> {
    let mut g = SchemaGenerator::default();
    let root = serde_json::to_value(schema(&mut g)).unwrap();
    let defs: serde_json::Map<String, Value> = g
        .definitions()
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap()))
        .collect();
    let mut out = BTreeSet::new();
    property_names(&root, &defs, &mut BTreeSet::new(), &mut out);
    out
}

#[test]
fn every_method_that_hands_out_or_writes_a_secret_is_local_only() {
    let mut must = Vec::new();
    for m in describe_all() {
        let result = fields(m.result);
        let params = fields(m.params);
        let secret_out = SECRET_FIELDS.iter().any(|f| result.contains(*f));
        let secret_in = params.contains("value");
        if (secret_out || secret_in) && m.name != "deployer.create_user" {
            must.push(m.name);
        }
        if m.name == "deployer.create_user" {
            assert!(
                result.contains("initial_password"),
                "the exception is still real"
            );
        }
    }
    // The two secret_* methods that neither return nor take a value (list, delete) are local-only
    // by choice: slot names and deletion are operator business too.
    let mut declared: Vec<&str> = LOCAL_ONLY_METHOD_NAMES.to_vec();
    declared.retain(|n| !["deployer.secret_list", "deployer.secret_delete"].contains(n));
    must.sort_unstable();
    declared.sort_unstable();
    assert_eq!(must, declared);
    assert!(must.contains(&"deployer.reset_forge_password"), "{must:?}");
}

/// The `reads` declarations (TCP serves only these; the client retries only these) against the names: every
/// `get_`/`list_`/`find_` method is declared a read, and a read is one of those or one of two named
/// exceptions. A method that acts (create, delete, provision, cancel, probe, reconcile…) declared `reads` would
/// be served to anyone on TCP and sent twice by the client.
#[test]
fn the_methods_declared_reads_are_the_ones_that_only_read() {
    use hero_os_tfgrid_deployer_sdk::methods::{ALL_METHOD_NAMES, READ_METHOD_NAMES};
    // `vm_ssh_target` is not one: it asks the backend (a `tofu output` run), so it stays off TCP.
    const OTHER_READS: &[&str] = &["deployer.job_events", "deployer.server_info"];
    for name in ALL_METHOD_NAMES {
        let verb = name.strip_prefix("deployer.").unwrap();
        let by_name = ["get_", "list_", "find_"]
            .iter()
            .any(|p| verb.starts_with(p))
            || OTHER_READS.contains(name);
        assert_eq!(
            READ_METHOD_NAMES.contains(name),
            by_name,
            "{name}: declared reads = {}",
            READ_METHOD_NAMES.contains(name)
        );
    }
    for name in LOCAL_ONLY_METHOD_NAMES {
        let writes_secret = ["secret_set", "secret_delete", "reset_forge_password"]
            .iter()
            .any(|w| name.ends_with(w));
        assert!(
            !(writes_secret && READ_METHOD_NAMES.contains(name)),
            "{name}"
        );
    }
}
