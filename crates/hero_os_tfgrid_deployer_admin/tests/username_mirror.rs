//! The create-user form's inline check (`assets/app.js`, `usernameError`) mirrors the SDK's
//! `username::validate`, the rules the server enforces: the same verdict and the same message for
//! a family of names around every rule, run through real Node.js (installed by the test script).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hero_os_tfgrid_deployer_sdk::username::{validate, MAX_LEN, RESERVED, TEST_PREFIX};

#[test]
fn the_forms_username_check_says_what_the_server_says() {
    let long = "a".repeat(MAX_LEN + 1);
    let names: Vec<&str> = vec![
        "alice",
        "a",
        "7up",
        "42a",
        "user42",
        "jan-de-vries",
        "",
        &long,
        "j\u{fc}rgen",
        "Alice",
        "a.b",
        "a_b",
        "a b",
        "..",
        "-abc",
        "abc-",
        "a--b",
        "42",
        "0",
        "2024",
        "admin",
        "ghost",
        "deployer-test-x",
        "deployer_test_",
        "deployer_test_A",
        "deployer_test_-x",
        "deployer_test_run1",
        "deployer_test_42",
        "deployer_test_a-b",
    ];
    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/src/assets/app.js");
    let script = format!(
        "global.window = {{}}; global.document = {{ addEventListener() {{}} }};\n\
         require({app:?});\n\
         const rules = {{ max: {MAX_LEN}, prefix: {TEST_PREFIX:?}, reserved: {reserved} }};\n\
         const names = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n\
         console.log(JSON.stringify(names.map(n => window.heroUsernameError(n, rules))));",
        reserved = serde_json::to_string(RESERVED).unwrap(),
    );
    let mut child = std::process::Command::new("node")
        .arg("-e")
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node (scripts/install-test-deps.sh)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(serde_json::to_string(&names).unwrap().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let js: Vec<Option<String>> = serde_json::from_slice(&out.stdout).unwrap();
    for (name, js) in names.iter().zip(js) {
        let rust = validate(name).err().map(|e| e.to_string());
        assert_eq!(js, rust, "{name:?}");
    }
}
