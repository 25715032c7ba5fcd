//! Services a test owns alone, so it can stop, restart or wipe them
//! mid-run (fault injection): a private PostgreSQL cluster and a private
//! Redis, both from the local binaries.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::local::{chown, command_as, find_binary, is_root, unprivileged_user, wait_for_port};

/// A PostgreSQL cluster of its own, in a fresh data folder.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    user: Option<String>,
    pg_ctl: PathBuf,
    /// Extra `-c` settings (TLS).
    extra: String,
}

impl PrivatePostgres {
    /// initdb and start on a free port (durability settings left at their
    /// defaults: fault tests restart it and expect nothing lost).
    pub fn start() -> Result<PrivatePostgres, String> {
        let pg = PrivatePostgres::init()?;
        pg.ctl(&["start"])?;
        Ok(pg)
    }

    /// Like [`start`](Self::start), but serving TLS only, as a managed
    /// PostgreSQL that forces it (RDS `rds.force_ssl`): `cert`/`key` are the
    /// server's PEM files; a connection without TLS is rejected.
    pub fn start_tls(cert: &Path, key: &Path) -> Result<PrivatePostgres, String> {
        let mut pg = PrivatePostgres::init()?;
        let data = pg.dir.join("data");
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            fs::copy(from, data.join(to)).map_err(|e| format!("{}: {e}", from.display()))?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(data.join(to), fs::Permissions::from_mode(0o600))
                .map_err(|e| e.to_string())?;
            if let Some(u) = &pg.user {
                chown(&data.join(to), u)?;
            }
        }
        fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )
        .map_err(|e| e.to_string())?;
        pg.extra = "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".into();
        pg.ctl(&["start"])?;
        Ok(pg)
    }

    fn init() -> Result<PrivatePostgres, String> {
        let (Some(initdb), Some(pg_ctl)) = (find_binary("initdb"), find_binary("pg_ctl")) else {
            return Err("PostgreSQL server binaries (initdb, pg_ctl) are not installed".into());
        };
        let user = if is_root() {
            Some(unprivileged_user().ok_or("running as root with no postgres/nobody user")?)
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!("jq-private-pg-{}", crate::unique()));
        fs::create_dir_all(dir.join("data")).map_err(|e| e.to_string())?;
        if let Some(u) = &user {
            chown(&dir, u)?;
        }
        let out = command_as(user.as_deref(), &initdb)
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(PrivatePostgres {
            port: crate::free_port(),
            dir,
            user,
            pg_ctl,
            extra: String::new(),
        })
    }

    /// URL of database `db` (the server creates its tables on start).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn ctl(&self, action: &[&str]) -> Result<(), String> {
        let data = self.dir.join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 {}",
            self.port,
            data.display(),
            self.extra
        );
        let log = self.dir.join("postgres.log");
        let out = command_as(self.user.as_deref(), &self.pg_ctl)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(&opts)
            .args(["-w", "-t", "60"])
            .args(action)
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pg_ctl {action:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        if action.contains(&"start") || action.contains(&"restart") {
            wait_for_port(self.port, "PostgreSQL", &log)?;
        }
        Ok(())
    }

    /// Create database `name`.
    pub fn create_db(&self, name: &str) -> Result<(), String> {
        let psql = find_binary("psql").ok_or("psql is not installed")?;
        let out = Command::new(psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-c",
            ])
            .arg(format!("CREATE DATABASE \"{name}\""))
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(())
    }

    /// Fast shutdown (connections are cut), then start again on the same
    /// port and data.
    pub fn restart(&self) -> Result<(), String> {
        self.ctl(&["-m", "fast", "stop"])?;
        self.ctl(&["start"])
    }

    pub fn stop(&self) -> Result<(), String> {
        self.ctl(&["-m", "fast", "stop"])
    }

    pub fn start_again(&self) -> Result<(), String> {
        self.ctl(&["start"])
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.ctl(&["-m", "immediate", "stop"]);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A redis-server of its own on a fixed port, so it can be killed and
/// started again (empty, as after a flush) where clients expect it.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
    /// `--tls-*` arguments: TLS only on `port`, no plaintext port.
    tls: Vec<String>,
}

impl PrivateRedis {
    pub fn start() -> Result<PrivateRedis, String> {
        let mut r = PrivateRedis {
            port: crate::free_port(),
            child: None,
            tls: vec![],
        };
        r.start_again()?;
        Ok(r)
    }

    /// TLS only, as ElastiCache with in-transit encryption: the server's
    /// certificate from `pki`; clients need no certificate.
    pub fn start_tls(pki: &crate::pki::Pki) -> Result<PrivateRedis, String> {
        let port = crate::free_port();
        let mut r = PrivateRedis {
            port,
            child: None,
            tls: vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                pki.file("server.pem"),
                "--tls-key-file".into(),
                pki.file("server.key"),
                "--tls-ca-cert-file".into(),
                pki.file("ca.pem"),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
        };
        r.start_again()?;
        Ok(r)
    }

    /// `rediss://localhost:port` (the certificate names localhost).
    pub fn tls_url(&self) -> String {
        format!("rediss://localhost:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port, with no data.
    pub fn start_again(&mut self) -> Result<(), String> {
        let bin = find_binary("redis-server").ok_or("redis-server is not installed")?;
        let mut cmd = Command::new(bin);
        if self.tls.is_empty() {
            cmd.args(["--port", &self.port.to_string()]);
        } else {
            cmd.args(&self.tls);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?;
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!("redis-server did not start on port {}", self.port))
    }

    /// Kill it (SIGKILL): everything it held is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
