//! Docker detection and containers (resolution step 2).

use std::io::{Read, Write};
use std::time::Duration;

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// True when a Docker daemon answers `/_ping` on its socket. Without one,
/// testcontainers cannot work, so we skip it without waiting.
pub(crate) fn daemon_answers() -> bool {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => unix_ping(h.trim_start_matches("unix://")),
        Ok(h) if !h.is_empty() => {
            std::net::TcpStream::connect(h.trim_start_matches("tcp://")).is_ok_and(ping)
        }
        _ => unix_ping("/var/run/docker.sock"),
    }
}

fn unix_ping(path: &str) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok_and(ping)
}

/// `GET /_ping` over an open connection; true on HTTP 200.
fn ping<S: Read + Write + TimeoutStream>(mut s: S) -> bool {
    s.read_timeout_2s();
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.") && buf.contains(" 200 ")
}

/// Both socket kinds can bound their reads.
trait TimeoutStream {
    fn read_timeout_2s(&mut self);
}

impl TimeoutStream for std::net::TcpStream {
    fn read_timeout_2s(&mut self) {
        let _ = self.set_read_timeout(Some(Duration::from_secs(2)));
    }
}

impl TimeoutStream for std::os::unix::net::UnixStream {
    fn read_timeout_2s(&mut self) {
        let _ = self.set_read_timeout(Some(Duration::from_secs(2)));
    }
}

/// A started container, kept for the life of the test process.
pub(crate) struct Running {
    pub port: u16,
    _container: ContainerAsync<GenericImage>,
}

pub(crate) async fn postgres() -> Result<Running, String> {
    let c = GenericImage::new("postgres", "15-alpine")
        .with_exposed_port(5432.tcp())
        .with_wait_for(WaitFor::message_on_stderr(
            "database system is ready to accept connections",
        ))
        .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust")
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let port = c.get_host_port_ipv4(5432).await.map_err(|e| e.to_string())?;
    Ok(Running { port, _container: c })
}

pub(crate) async fn redis() -> Result<Running, String> {
    let c = GenericImage::new("redis", "7-alpine")
        .with_exposed_port(6379.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let port = c.get_host_port_ipv4(6379).await.map_err(|e| e.to_string())?;
    Ok(Running { port, _container: c })
}
