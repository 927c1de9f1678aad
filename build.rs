//! Records the git commit the crate is built from as `UPSELL_GIT_COMMIT`,
//! for the provenance `upsell train` saves with each run (`run.json`).
//! Outside a git checkout (a crates.io or container build) nothing is set.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok());
    if let Some(commit) = commit {
        println!("cargo:rustc-env=UPSELL_GIT_COMMIT={}", commit.trim());
    }
}
