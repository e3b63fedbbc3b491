//! Placeholder, replaced by the provisioning benchmark.
fn main() {}
