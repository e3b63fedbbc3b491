//! Golden test of the rendered per-user services.toml (update with UPDATE_GOLDEN=1).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use hero_os_tfgrid_deployer_backends::manifest::{ManifestUser, Profiles, DEFAULT_PROFILE};

#[test]
fn golden_demo_services_toml() {
    let user = ManifestUser {
        username: "jan-de-vries".into(),
        url: "https://jan_de_vries.gent01.grid.tf/".into(),
    };
    let text = Profiles::default().render(DEFAULT_PROFILE, &user).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/services.toml");
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&path).expect("run with UPDATE_GOLDEN=1 to create");
    assert_eq!(text, expected);
    // It is valid TOML with the demo services in order.
    let v: toml::Value = toml::from_str(&text).unwrap();
    let names: Vec<&str> = v["service"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "proxy",
            "router",
            "proc",
            "cockpit",
            "embedder-small",
            "db",
            "books"
        ]
    );
    assert_eq!(
        v["user"]["url"].as_str(),
        Some("https://jan_de_vries.gent01.grid.tf/")
    );
}

#[test]
fn configurable_profiles_and_escaping() {
    let mut p = Profiles::default();
    p.profiles
        .insert("minimal".into(), vec!["proxy".into(), "cockpit".into()]);
    let text = p
        .render(
            "minimal",
            &ManifestUser {
                username: "x\"y".into(),
                url: "https://x/".into(),
            },
        )
        .unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(v["user"]["name"].as_str(), Some("x\"y"));
    assert_eq!(v["service"].as_array().unwrap().len(), 2);
}
