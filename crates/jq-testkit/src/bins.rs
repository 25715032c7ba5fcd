//! The jq binaries for black-box tests. Another package's binaries have no
//! `CARGO_BIN_EXE_*` in a test, so the first call in a process builds them
//! (a no-op when up to date) into the same target folder and profile as the
//! running test, and returns their paths. `JQ_BIN_DIR` points at prebuilt
//! ones instead (e.g. a nix build).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn build() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("JQ_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    // <target>/<profile>/deps/<test binary>
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target folder")?
        .to_path_buf();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    let target = profile_dir.parent().ok_or("cannot locate the target folder")?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "--bins",
            "-p",
            "jq-server",
            "-p",
            "jq-worker",
            "-p",
            "jq-ctl",
        ])
        .arg("--target-dir")
        .arg(target);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd.output().map_err(|e| format!("cargo build: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the jq binaries failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(profile_dir)
}

/// Path of `jq-server`, `jq-worker` or `jq-ctl`.
pub fn binary(name: &str) -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match DIR.get_or_init(build) {
        Ok(dir) => dir.join(name),
        Err(e) => panic!("jq-testkit: {e}"),
    }
}
