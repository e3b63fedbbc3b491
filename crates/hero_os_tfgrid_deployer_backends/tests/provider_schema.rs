//! Every generated `main.tf.json` walked against the `threefoldtech/grid` provider's schema as
//! extracted from its Go source (`tests/fixtures/tfgrid/`, provenance in `PROVENANCE.md` there),
//! over the whole username space the SDK accepts; and the known bad cases, each of which the walk
//! must reject: the v1.11.1 schema (`mnemonics`, `disk_name`), 37-character names, 2-character and
//! `_` gateway labels, and one family of hostile edits per rule of the walk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hero_os_tfgrid_deployer_backends::grid_names::{gateway_labels, GridNames};
use hero_os_tfgrid_deployer_backends::opentofu::{
    env_contract_violations, render_main_tf_json, TfInputs,
};
use hero_os_tfgrid_deployer_backends::provider_schema::{
    check_config, grid_client_rules, ProviderSchema, Violation,
};
use hero_os_tfgrid_deployer_backends::{Network, ResourceName, VmSpec};
use hero_os_tfgrid_deployer_sdk::username;
use serde_json::{json, Value};

const CURRENT: &str = include_str!("fixtures/tfgrid/terraform-provider-grid.schema.json");
const V1_11_1: &str = include_str!("fixtures/tfgrid/terraform-provider-grid.v1.11.1.schema.json");
/// What the `tofu` child gets from the backend that the provider reads: the mnemonic.
const ENV: &[&str] = &["MNEMONIC", "PATH", "HOME", "TF_IN_AUTOMATION", "TF_INPUT"];

fn schema(text: &str, origin: &str) -> ProviderSchema {
    ProviderSchema::from_extraction(&serde_json::from_str(text).unwrap(), origin).unwrap()
}

fn current() -> ProviderSchema {
    schema(CURRENT, "vendored b7d1a8c7")
}

fn inputs(name: ResourceName, label: Option<String>, network: Network) -> TfInputs {
    TfInputs {
        name,
        network,
        node_id: 8,
        spec: VmSpec::default(),
        ssh_public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb1a2V5 hero@deployer".into(),
        mycelium_key_hex: "ab".repeat(32),
        mycelium_ip_seed_hex: "a1b2c3d4e5f6".into(),
        ip_range: "10.20.0.0/16".into(),
        web_port: 9988,
        gateway_label: label,
        provider_version: None,
    }
}

/// Valid usernames of every length 1..=40 in several shapes (letters, digits, hyphens in every
/// allowed position, the test prefix), as the SDK's one username function accepts them.
fn username_space() -> Vec<String> {
    let mut out = Vec::new();
    for len in 1..=username::MAX_LEN {
        let letters: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        // Digits then one letter (a name of digits only is not a username: it would read as an id).
        let digits: String = (0..len - 1)
            .map(|i| (b'0' + (i % 10) as u8) as char)
            .chain(std::iter::once('z'))
            .collect();
        // Hyphen every other character: a-b-c…, never first, last, or doubled.
        let hyphens: String = (0..len)
            .map(|i| {
                if i % 2 == 1 && i + 1 < len {
                    '-'
                } else {
                    (b'a' + (i % 26) as u8) as char
                }
            })
            .collect();
        let one_hyphen = if len >= 3 {
            format!("{}-{}", &letters[..len / 2], &letters[len / 2 + 1..])
        } else {
            letters.clone()
        };
        let test = if len > username::TEST_PREFIX.len() {
            format!(
                "{}{}",
                username::TEST_PREFIX,
                &letters[..len - username::TEST_PREFIX.len()]
            )
        } else {
            letters.clone()
        };
        for u in [letters, digits, hyphens, one_hyphen, test] {
            if username::validate(&u).is_ok() && !out.contains(&u) {
                out.push(u);
            }
        }
    }
    out
}

const USER_IDS: [i64; 7] = [
    0,
    1,
    42,
    999_999,
    2_147_483_648,
    10_000_000_000_000_000,
    i64::MAX,
];

fn assert_clean(what: &str, v: Vec<Violation>) {
    assert!(
        v.is_empty(),
        "{what}: {}",
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_generated_config_passes_the_vendored_schema_for_the_whole_username_space() {
    let s = current();
    // The same schema as `tofu providers schema -json` would print it (what the runtime check reads).
    let runtime = ProviderSchema::from_tofu_json(
        &s.to_tofu_json("registry.opentofu.org/threefoldtech/grid", ENV),
    )
    .unwrap();
    let users = username_space();
    assert!(users.len() > 150, "only {} usernames", users.len());
    assert!(users.iter().any(|u| u.len() == 40) && users.iter().any(|u| u.len() == 1));
    let mut checked = 0;
    for u in &users {
        for id in USER_IDS {
            let name = ResourceName::new(id, &username::grid_name(u)).unwrap();
            let names = GridNames::for_resource(&name);
            assert!(
                names.network.len() <= 36 && names.deployment.len() <= 36,
                "{u} {id}"
            );
            let labels = gateway_labels(&name);
            assert!(!labels.is_empty(), "{u} {id}: no gateway label");
            for label in labels.iter().map(Some).chain([None]) {
                for network in [Network::Main, Network::Test, Network::Qa, Network::Dev] {
                    let cfg = render_main_tf_json(&inputs(name.clone(), label.cloned(), network));
                    let what = format!("{u:?} id {id} label {label:?} {network}");
                    assert_clean(&what, check_config(&s, &cfg, ENV));
                    assert_clean(&what, check_config(&runtime, &cfg, ENV));
                    assert_clean(&what, grid_client_rules(&cfg));
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 4000, "{checked}");
    assert_clean("env contract", env_contract_violations(&runtime));
}

/// Labels are distinct across users (the deterministic fallback carries the user id), readable
/// first, and every one is a DNS label.
#[test]
fn gateway_labels_are_dns_labels_and_fallbacks_differ_between_users() {
    let mut fallbacks = std::collections::HashSet::new();
    for (i, u) in username_space().iter().enumerate() {
        let name = ResourceName::new(i as i64, &username::grid_name(u)).unwrap();
        let labels = gateway_labels(&name);
        for l in &labels {
            assert!((3..=36).contains(&l.len()), "{l}");
            assert!(
                l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
                "{l}"
            );
        }
        assert!(
            fallbacks.insert(labels.last().unwrap().clone()),
            "{u}: {labels:?}"
        );
    }
    let jan = ResourceName::new(42, &username::grid_name("jan-de-vries")).unwrap();
    assert_eq!(gateway_labels(&jan)[0], "jandevries");
}

fn vm(c: &mut Value) -> &mut Value {
    &mut c["resource"]["grid_deployment"]["vm"]["vms"][0]
}

fn violations_of(s: &ProviderSchema, cfg: &Value) -> Vec<String> {
    let mut v: Vec<String> = check_config(s, cfg, ENV)
        .into_iter()
        .chain(grid_client_rules(cfg))
        .map(|x| x.to_string())
        .collect();
    v.sort();
    v
}

fn demo_cfg() -> Value {
    let name = ResourceName::new(42, "jan_de_vries").unwrap();
    render_main_tf_json(&inputs(name, Some("jandevries".into()), Network::Test))
}

#[test]
fn the_v1_11_1_schema_rejects_the_config_naming_the_renamed_attributes() {
    let old = schema(V1_11_1, "vendored v1.11.1");
    let v = violations_of(&old, &demo_cfg());
    let text = v.join("\n");
    assert!(
        text.contains("resource.grid_deployment.vm.vms[0].mounts[0].name: unknown attribute"),
        "{text}"
    );
    assert!(
        text.contains("provider.grid.mnemonics: required attribute missing (nor is env MNEMONICS"),
        "{text}"
    );
    let runtime = ProviderSchema::from_tofu_json(
        &old.to_tofu_json("registry.opentofu.org/threefoldtech/grid", ENV),
    )
    .unwrap();
    let contract: Vec<String> = env_contract_violations(&runtime)
        .iter()
        .map(|x| x.to_string())
        .collect();
    assert!(
        contract
            .iter()
            .any(|c| c.starts_with("provider.grid.mnemonic: ") && c.contains("mnemonics")),
        "{contract:?}"
    );
}

/// One hostile edit per rule; each must produce a violation at the named path.
#[test]
fn each_rule_of_the_walk_catches_its_family_of_bad_configs() {
    let s = current();
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "unknown attr",
            |c| vm(c)["ygg_ip"] = json!("x"),
            "vms[0].ygg_ip: unknown attribute",
        ),
        (
            "unknown block attr",
            |c| c["resource"]["grid_deployment"]["vm"]["disks"][0]["disk_name"] = json!("d"),
            "disks[0].disk_name: unknown attribute",
        ),
        (
            "computed-only",
            |c| vm(c)["mycelium_ip"] = json!("1::1"),
            "vms[0].mycelium_ip: is computed",
        ),
        (
            "computed-only top",
            |c| c["resource"]["grid_network"]["net"]["external_ip"] = json!("1.1.1.1/24"),
            "net.external_ip: is computed",
        ),
        (
            "type int",
            |c| vm(c)["cpu"] = json!("16"),
            "vms[0].cpu: expected an integer",
        ),
        (
            "type float",
            |c| vm(c)["memory"] = json!(8192.5),
            "vms[0].memory: expected an integer",
        ),
        (
            "type bool",
            |c| vm(c)["publicip"] = json!("false"),
            "vms[0].publicip: expected a bool",
        ),
        (
            "type list elem",
            |c| c["resource"]["grid_network"]["net"]["nodes"] = json!(["8"]),
            "nodes[0]: expected an integer",
        ),
        (
            "type map elem",
            |c| c["resource"]["grid_network"]["net"]["mycelium_keys"] = json!({"8": 1}),
            "mycelium_keys[\"8\"]: expected a string",
        ),
        (
            "range low",
            |c| vm(c)["memory"] = json!(255),
            "vms[0].memory: 255 is outside 256..=262144",
        ),
        (
            "range high",
            |c| vm(c)["cpu"] = json!(33),
            "vms[0].cpu: 33 is outside 1..=32",
        ),
        (
            "disk range",
            |c| c["resource"]["grid_deployment"]["vm"]["disks"][0]["size"] = json!(0),
            "disks[0].size: 0 is outside 1..=10240",
        ),
        (
            "rootfs range",
            |c| vm(c)["rootfs_size"] = json!(512),
            "vms[0].rootfs_size: 512 is outside",
        ),
        (
            "regex",
            |c| vm(c)["name"] = json!("jan-de-vries"),
            "vms[0].name: \"jan-de-vries\" does not match",
        ),
        (
            "cidr size",
            |c| c["resource"]["grid_network"]["net"]["ip_range"] = json!("10.20.0.0/24"),
            "ip_range: \"10.20.0.0/24\": prefix /24 outside",
        ),
        (
            "cidr host bits",
            |c| c["resource"]["grid_network"]["net"]["ip_range"] = json!("10.20.1.0/16"),
            "ip_range: \"10.20.1.0/16\" is not a network address",
        ),
        (
            "enum",
            |c| c["provider"]["grid"]["network"] = json!("mainnet"),
            "provider.grid.network: \"mainnet\" is not one of",
        ),
        (
            "url scheme",
            |c| c["provider"]["grid"]["substrate_url"] = json!("ws://x"),
            "provider.grid.substrate_url",
        ),
        (
            "missing required",
            |c| {
                vm(c).as_object_mut().unwrap().remove("flist");
            },
            "vms[0].flist: required attribute missing",
        ),
        (
            "missing required top",
            |c| {
                c["resource"]["grid_network"]["net"]
                    .as_object_mut()
                    .unwrap()
                    .remove("ip_range");
            },
            "net.ip_range: required attribute missing",
        ),
        (
            "nesting",
            |c| vm(c)["mounts"] = json!({"name": "data", "mount_point": "/data"}),
            "vms[0].mounts: is a nested block",
        ),
        (
            "nesting attr as block",
            |c| vm(c)["env_vars"] = json!([{"SSH_KEY": "x"}]),
            "vms[0].env_vars: expected a map",
        ),
        (
            "unknown resource",
            |c| c["resource"]["grid_vm"] = json!({"x": {}}),
            "resource.grid_vm: ",
        ),
        (
            "ref attr",
            |c| c["output"]["vm_ip"]["value"] = json!("${grid_deployment.vm.vms[0].ipv4}"),
            "output.vm_ip.value: ${grid_deployment.vm.vms[0].ipv4}",
        ),
        (
            "ref index",
            |c| c["output"]["vm_ip"]["value"] = json!("${grid_deployment.vm.vms[1].ip}"),
            "vms[1] does not exist",
        ),
        (
            "ref no index",
            |c| c["output"]["vm_ip"]["value"] = json!("${grid_deployment.vm.vms.ip}"),
            "block list vms needs an index",
        ),
        (
            "ref fqdn",
            |c| c["output"]["fqdn"]["value"] = json!("${grid_name_proxy.gw.domain}"),
            "output.fqdn.value: ${grid_name_proxy.gw.domain}",
        ),
        (
            "ref instance",
            |c| {
                c["resource"]["grid_name_proxy"]["gw"]["network"] =
                    json!("${grid_network.other.name}")
            },
            "grid_network.other is not in this config",
        ),
        (
            "ref in backends",
            |c| {
                c["resource"]["grid_name_proxy"]["gw"]["backends"] =
                    json!(["http://${grid_deployment.vm.vms[0].private_ip}:9988"])
            },
            "backends[0]: ${grid_deployment.vm.vms[0].private_ip}",
        ),
        (
            "pin range",
            |c| c["terraform"]["required_providers"]["grid"]["version"] = json!(">= 1.11.2"),
            "version: \">= 1.11.2\" is not an exact pin",
        ),
        (
            "pin missing",
            |c| {
                c["terraform"]["required_providers"]["grid"]
                    .as_object_mut()
                    .unwrap()
                    .remove("version");
            },
            "version: missing",
        ),
        (
            "37-char vm name",
            |c| vm(c)["name"] = json!("a".repeat(37)),
            "vms[0].name: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" is 37 characters",
        ),
        (
            "37-char network name",
            |c| {
                c["resource"]["grid_network"]["net"]["name"] =
                    json!(format!("hero_u42_{}", "b".repeat(28)))
            },
            "net.name: ",
        ),
        (
            "2-char label",
            |c| c["resource"]["grid_name_proxy"]["gw"]["name"] = json!("ab"),
            "gw.name: gateway label \"ab\" is 2 characters",
        ),
        (
            "underscore label",
            |c| c["resource"]["grid_name_proxy"]["gw"]["name"] = json!("jan_de_vries"),
            "gw.name: gateway label \"jan_de_vries\" contains '_'",
        ),
        (
            "seed length",
            |c| vm(c)["mycelium_ip_seed"] = json!("a1b2c3"),
            "mycelium_ip_seed: must be hex of 6 bytes",
        ),
        (
            "key node",
            |c| {
                c["resource"]["grid_network"]["net"]["mycelium_keys"] =
                    json!({"9": "ab".repeat(32)})
            },
            "mycelium_keys[\"9\"]: a key for a node",
        ),
        (
            "mount unknown disk",
            |c| vm(c)["mounts"][0]["name"] = json!("other"),
            "mounts[0].name: mounts \"other\"",
        ),
    ];
    for (what, edit, expect) in cases {
        let mut cfg = demo_cfg();
        edit(&mut cfg);
        let v = violations_of(&s, &cfg);
        assert!(
            v.iter().any(|x| x.contains(expect)),
            "{what}: expected a violation containing {expect:?}, got {v:#?}"
        );
    }
    // And the unedited config is clean, so each violation above comes from its edit.
    assert_eq!(violations_of(&s, &demo_cfg()), Vec::<String>::new());
}

/// The old naming (`hero_u<id>_<grid name>` as is) broke the grid client's 36-character limit for
/// long usernames: the walk must say so (proves the rule fires on real shapes, not only edits).
#[test]
fn the_former_unshortened_names_are_rejected() {
    let long = "a".repeat(40);
    let name = ResourceName::new(42, &long).unwrap();
    let mut cfg = render_main_tf_json(&inputs(name.clone(), None, Network::Main));
    let full = name.to_string();
    cfg["resource"]["grid_deployment"]["vm"]["name"] = json!(full);
    cfg["resource"]["grid_deployment"]["vm"]["vms"][0]["name"] = json!(full);
    cfg["resource"]["grid_network"]["net"]["name"] = json!(format!("{full}_net"));
    let v = violations_of(&current(), &cfg);
    assert_eq!(
        v.iter()
            .filter(|x| x.contains("characters; the grid client allows 1..=36"))
            .count(),
        3,
        "{v:#?}"
    );
}

/// terraform-plugin-sdk v2 shows a Required attribute with an env default as optional only when
/// the variable is set for the provider: the runtime check therefore sees `mnemonic` required
/// unless the backend gives the child `MNEMONIC` (it always does).
#[test]
fn the_tofu_format_reflects_the_childs_environment() {
    let s = current();
    let addr = "registry.opentofu.org/threefoldtech/grid";
    let with = ProviderSchema::from_tofu_json(&s.to_tofu_json(addr, &["MNEMONIC"])).unwrap();
    let without = ProviderSchema::from_tofu_json(&s.to_tofu_json(addr, &[])).unwrap();
    assert!(with.provider.attributes["mnemonic"].optional);
    assert!(!with.provider.attributes["mnemonic"].required);
    assert!(without.provider.attributes["mnemonic"].required);
    // `network` has a fallback (`dev`): optional either way, which is why the config always sets it.
    assert!(without.provider.attributes["network"].optional);
    let cfg = demo_cfg();
    let v: Vec<String> = check_config(&without, &cfg, &[])
        .iter()
        .map(|x| x.to_string())
        .collect();
    assert_eq!(v, ["provider.grid.mnemonic: required attribute missing"]);
    assert_clean("with MNEMONIC", check_config(&with, &cfg, ENV));
}
