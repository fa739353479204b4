//! Records the git revision the train function is built from, for model manifests.

#![allow(clippy::print_stdout)] // Build scripts talk to cargo on stdout.

fn main() {
    let revision = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if !revision.is_empty() {
        println!("cargo:rustc-env=LAMBDAML_GIT_REVISION={revision}");
    }
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
}
