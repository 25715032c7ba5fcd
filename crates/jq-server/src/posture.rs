//! The server's security posture (JQ-173): whether it listens beyond
//! loopback with authentication off or without TLS. Said once at start
//! (WARN) and on every `GetSystemStatus` (`jq-ctl status`, "security").

use std::net::IpAddr;

use jq_config::ServerConfig;

/// What an operator should know about who can reach this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posture {
    /// Loopback only: nobody else can reach it.
    Loopback,
    /// Beyond loopback with TLS and auth on.
    Protected,
    /// Beyond loopback, missing these protections.
    Exposed { missing: Vec<&'static str> },
}

/// Whether `bind` (an address or host name) is reachable only from this
/// machine. Names other than `localhost` count as reachable.
pub fn is_loopback(bind: &str) -> bool {
    let host = bind.trim().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub fn of(cfg: &ServerConfig) -> Posture {
    if is_loopback(&cfg.server.bind) {
        return Posture::Loopback;
    }
    let mut missing = vec![];
    if !cfg.auth.enabled {
        missing.push("authentication (auth.enabled)");
    }
    if !cfg.tls.enabled {
        missing.push("TLS (tls.enabled)");
    }
    if missing.is_empty() {
        Posture::Protected
    } else {
        Posture::Exposed { missing }
    }
}

impl Posture {
    /// `(state, detail)` for the "security" component of the status.
    pub fn component(&self, bind: &str) -> (&'static str, String) {
        match self {
            Posture::Loopback => ("ok", format!("listening on {bind} (loopback only)")),
            Posture::Protected => ("ok", format!("listening on {bind} with TLS and authentication")),
            Posture::Exposed { missing } => (
                "warning",
                format!(
                    "listening on {bind} without {}: anyone who can reach this address can submit jobs and drive workers",
                    missing.join(" and ")
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(bind: &str, auth: bool, tls: bool) -> ServerConfig {
        let mut c = ServerConfig::default();
        c.server.bind = bind.into();
        c.auth.enabled = auth;
        c.tls.enabled = tls;
        c
    }

    #[test]
    fn jq_173_beyond_loopback_without_auth_or_tls_is_exposed() {
        for b in ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"] {
            assert_eq!(of(&cfg(b, false, false)), Posture::Loopback, "{b}");
        }
        let p = of(&cfg("0.0.0.0", false, true));
        assert_eq!(
            p,
            Posture::Exposed {
                missing: vec!["authentication (auth.enabled)"]
            }
        );
        let (state, detail) = of(&cfg("::", false, false)).component("::");
        assert_eq!(state, "warning");
        assert!(
            detail.contains("authentication") && detail.contains("TLS"),
            "{detail}"
        );
        assert_eq!(of(&cfg("10.0.0.5", true, true)), Posture::Protected);
        assert_eq!(
            of(&cfg("jq.internal", true, false)).component("jq.internal").0,
            "warning"
        );
    }
}
