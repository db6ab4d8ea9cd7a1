//! The container image's Dockerfile: hadolint-clean, a locked release build in one stage and a
//! non-root runtime stage without a toolchain, and a build context that holds what it copies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;

use session_authz_testkit::dockerfile::Dockerfile;
use session_authz_testkit::process::{root, run, tool};

#[test]
fn dockerfile_lints_clean_and_builds_locked_for_a_non_root_user() {
    run(Command::new(tool("hadolint")).current_dir(root()).args([
        "--failure-threshold",
        "style",
        "Dockerfile",
    ]));

    let dockerfile = Dockerfile::read(&root().join("Dockerfile"));
    let stages = dockerfile.stages();
    assert!(stages.len() >= 2, "a multi-stage build");

    let builds: Vec<&str> = dockerfile
        .instructions
        .iter()
        .filter(|i| i.args.contains("cargo build"))
        .map(|i| i.args.as_str())
        .collect();
    assert!(!builds.is_empty());
    for build in &builds {
        for flag in ["--locked", "--release", "--bin session-authz"] {
            assert!(build.contains(flag), "{build}: wants {flag}");
        }
    }

    let last = stages.last().unwrap();
    let find = |keyword: &str| last.iter().rev().find(|i| i.keyword == keyword);
    let user = &find("USER").expect("USER in the final stage").args;
    let uid = user.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|uid| uid > 0),
        "numeric non-root USER: {user}"
    );
    let entrypoint = &find("ENTRYPOINT")
        .expect("ENTRYPOINT in the final stage")
        .args;
    assert!(
        entrypoint.starts_with("[\"") && entrypoint.contains("session-authz\""),
        "exec-form ENTRYPOINT of the binary: {entrypoint}"
    );
    let expose = &find("EXPOSE").expect("EXPOSE").args;
    assert!(
        expose.contains("9001") && expose.contains("9002"),
        "{expose}"
    );
    assert!(
        !last.iter().any(|i| i.args.contains("cargo")),
        "no toolchain in the runtime stage"
    );

    // The build context holds what the build copies: at least all a library build reads (the
    // offline-build test builds from exactly these), and .dockerignore keeps none of it out.
    let copied = dockerfile.context_sources();
    for needed in ["src", "proto", "Cargo.lock", "Cargo.toml", "build.rs"] {
        assert!(copied.contains(&needed), "the build should copy {needed}");
    }
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    let ignored: BTreeSet<&str> = ignore
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .collect();
    for dir in ["target", ".tools", ".git"] {
        assert!(ignored.contains(dir), ".dockerignore should hold {dir}/");
    }
    for source in copied {
        // The path and every folder above it.
        let mut prefix = String::new();
        for part in source.trim_end_matches('/').split('/') {
            prefix = if prefix.is_empty() {
                part.to_owned()
            } else {
                format!("{prefix}/{part}")
            };
            assert!(
                !ignored.contains(prefix.as_str()),
                ".dockerignore must not hold {prefix}, which the build copies"
            );
        }
    }
}
