//! Local service binaries (resolution step 3), started once per machine in
//! a shared folder and reused by every test process: nextest runs each test
//! in its own process, and an `initdb` per test would dominate the run.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where shared local services live.
fn base_dir() -> PathBuf {
    std::env::temp_dir().join("jq-testkit")
}

/// Find a binary on PATH or in the usual install folders.
pub(crate) fn find_binary(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    // Debian/Ubuntu keep server binaries off PATH.
    if let Ok(rd) = fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect();
        versions.sort();
        versions.reverse();
        dirs.extend(versions);
    }
    dirs.extend(
        [
            "/usr/local/bin",
            "/usr/bin",
            "/usr/sbin",
            "/opt/homebrew/bin",
            "/usr/local/pgsql/bin",
        ]
        .map(PathBuf::from),
    );
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

pub(crate) fn is_root() -> bool {
    // `id -u` keeps this crate free of libc.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// An unprivileged account to run PostgreSQL as when we are root.
pub(crate) fn unprivileged_user() -> Option<String> {
    ["postgres", "nobody"]
        .into_iter()
        .find(|u| {
            Command::new("id")
                .arg("-u")
                .arg(u)
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(str::to_string)
}

/// `cmd args…`, as `user` when given (via runuser, falling back to setpriv).
pub(crate) fn command_as(user: Option<&str>, bin: &Path) -> Command {
    match user {
        None => Command::new(bin),
        Some(u) => {
            if find_binary("runuser").is_some() {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(u).arg("--").arg(bin);
                c
            } else {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={u}"))
                    .arg(format!("--regid={u}"))
                    .arg("--init-groups")
                    .arg(bin);
                c
            }
        }
    }
}

pub(crate) fn chown(path: &Path, user: &str) -> Result<(), String> {
    let st = Command::new("chown")
        .arg("-R")
        .arg(user)
        .arg(path)
        .status()
        .map_err(|e| format!("chown: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("chown {} failed", path.display()))
    }
}

/// Hold an exclusive lock on `dir/.lock` while starting a service.
fn lock(dir: &Path) -> Result<File, String> {
    fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let f = File::create(dir.join(".lock")).map_err(|e| format!("lock file: {e}"))?;
    f.lock().map_err(|e| format!("lock {}: {e}", dir.display()))?;
    Ok(f)
}

fn tcp_answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300)).is_ok()
}

/// The port a previous test process started the service on, if it still
/// answers there.
fn already_running(port_file: &Path) -> Option<u16> {
    let port: u16 = fs::read_to_string(port_file).ok()?.trim().parse().ok()?;
    tcp_answers(port).then_some(port)
}

pub(crate) fn wait_for_port(port: u16, what: &str, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if tcp_answers(port) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let tail = fs::read_to_string(log).unwrap_or_default();
    Err(format!(
        "{what} did not start on port {port}: {}",
        tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
    ))
}

/// A shared local PostgreSQL; returns its port. `Ok(None)` when the
/// binaries are not installed.
pub(crate) fn postgres() -> Result<Option<u16>, String> {
    let (Some(initdb), Some(pg_ctl)) = (find_binary("initdb"), find_binary("pg_ctl")) else {
        return Ok(None);
    };
    let dir = base_dir().join("postgres");
    let _guard = lock(&dir)?;
    let port_file = dir.join("port");
    if let Some(port) = already_running(&port_file) {
        return Ok(Some(port));
    }
    let user =
        if is_root() {
            Some(unprivileged_user().ok_or(
                "running as root and no unprivileged user (postgres or nobody) to run PostgreSQL as",
            )?)
        } else {
            None
        };
    let data = dir.join("data");
    let log = dir.join("postgres.log");
    if !data.join("PG_VERSION").exists() {
        let _ = fs::remove_dir_all(&data);
        fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        if let Some(u) = &user {
            chown(&dir, u)?;
        }
        let out = command_as(user.as_deref(), &initdb)
            .args(["-D"])
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    if let Some(u) = &user {
        chown(&dir, u)?;
    }
    let port = crate::free_port();
    let opts = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=400",
        data.display()
    );
    let st = command_as(user.as_deref(), &pg_ctl)
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(&log)
        .arg("-o")
        .arg(&opts)
        .args(["-w", "-t", "60", "start"])
        .output()
        .map_err(|e| format!("pg_ctl: {e}"))?;
    if !st.status.success() {
        return Err(format!(
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&st.stderr).trim()
        ));
    }
    wait_for_port(port, "PostgreSQL", &log)?;
    fs::write(&port_file, port.to_string()).map_err(|e| e.to_string())?;
    Ok(Some(port))
}

/// A shared local Redis; returns its port. `Ok(None)` when not installed.
pub(crate) fn redis() -> Result<Option<u16>, String> {
    let Some(bin) = find_binary("redis-server") else {
        return Ok(None);
    };
    let dir = base_dir().join("redis");
    let _guard = lock(&dir)?;
    let port_file = dir.join("port");
    if let Some(port) = already_running(&port_file) {
        return Ok(Some(port));
    }
    let port = crate::free_port();
    let log = dir.join("redis.log");
    let st = Command::new(bin)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--daemonize", "yes", "--dir"])
        .arg(&dir)
        .arg("--logfile")
        .arg(&log)
        .status()
        .map_err(|e| format!("redis-server: {e}"))?;
    if !st.success() {
        return Err("redis-server failed to start".into());
    }
    wait_for_port(port, "Redis", &log)?;
    fs::write(&port_file, port.to_string()).map_err(|e| e.to_string())?;
    Ok(Some(port))
}
