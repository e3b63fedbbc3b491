//! The step table is the one list of steps: the OpenRPC summaries, docs/provisioning.md's table
//! and the README's arrow list must say the same steps in the same order (a step added to the
//! table fails this until they do).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hero_os_tfgrid_deployer_sdk::methods::{DecommissionVm, Method, ProvisionVm, RepairVm};
use hero_os_tfgrid_deployer_server::provision::steps::{
    DECOMMISSION_STEPS, PROVISION_STEPS, REPAIR_STEPS,
};

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// `text` with every run of whitespace as one space.
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_openrpc_summaries_name_the_steps_in_table_order() {
    assert!(
        ProvisionVm::SUMMARY.ends_with(&PROVISION_STEPS.join(", ")),
        "{}",
        ProvisionVm::SUMMARY
    );
    assert!(
        DecommissionVm::SUMMARY.contains(&DECOMMISSION_STEPS.join(", ")),
        "{}",
        DecommissionVm::SUMMARY
    );
    assert!(
        RepairVm::SUMMARY.contains(&REPAIR_STEPS.join(", ")),
        "{}",
        RepairVm::SUMMARY
    );
}

#[test]
fn the_provisioning_doc_and_the_readme_list_the_table() {
    let doc = repo_file("docs/provisioning.md");
    let numbered: Vec<String> = PROVISION_STEPS
        .iter()
        .enumerate()
        .map(|(i, n)| format!("| {} `{n}` |", i + 1))
        .collect();
    for row in &numbered {
        assert!(
            doc.contains(row.as_str()),
            "docs/provisioning.md lacks {row}"
        );
    }
    assert!(
        flat(&doc).contains(&DECOMMISSION_STEPS.join(" → ")),
        "docs/provisioning.md: decommission steps"
    );
    assert!(
        flat(&doc).contains(&REPAIR_STEPS.join(" → ")),
        "docs/provisioning.md: repair steps"
    );
    let readme = flat(&repo_file("README.md"));
    assert!(
        readme.contains(&format!(
            "A provision runs `{}`",
            PROVISION_STEPS.join(" → ")
        )),
        "README.md's step list differs from the table"
    );
}
