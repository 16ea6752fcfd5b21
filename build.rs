//! Embeds the git revision the binary was built from (`RINGMQ_GIT_REVISION`), so a broker can
//! say which code it runs (`ringmq --version`, the ready line) and a benchmark report records
//! the broker's revision rather than that of whatever directory the bench ran in.

use std::process::Command;

/// What the binary is built from (`tuning/` holds the example config the tests include).
const INPUTS: [&str; 5] = ["src", "build.rs", "Cargo.toml", "Cargo.lock", "tuning"];

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    let revision = match git(&["rev-parse", "HEAD"]) {
        Some(rev) => {
            // Dirty only for changes to what the binary is built from, so editing the docs
            // does not rebuild the crate.
            let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
            status.extend(INPUTS);
            let dirty = git(&status).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}+dirty")
            } else {
                rev
            }
        }
        // Built from a source archive: say so rather than guess.
        None => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=RINGMQ_GIT_REVISION={revision}");
    // Rerun when a commit or checkout moves HEAD, or a source file changes (dirty state).
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        for f in ["HEAD", "index", "logs/HEAD"] {
            println!("cargo:rerun-if-changed={git_dir}/{f}");
        }
    }
    for p in INPUTS {
        println!("cargo:rerun-if-changed={p}");
    }
}
