//! The `Host` check every HTTP listener applies: a defence against DNS rebinding, where a web
//! page makes its own host name resolve to 127.0.0.1 and then reads the query API (or posts
//! spans) as a same-origin page. Such a request names the attacker's host in `Host`, so only
//! the names and addresses this server is actually reached by are accepted.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Which `Host` values are accepted: IP literals that are loopback or the listen address (any
/// IP when listening on all addresses), `localhost` and `*.localhost` (RFC 6761: always
/// loopback), and the names given with `--allow-host`.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    listen: IpAddr,
    names: Vec<String>,
}

impl AllowedHosts {
    pub fn new(listen: IpAddr, names: &[String]) -> Self {
        AllowedHosts {
            listen,
            names: names
                .iter()
                .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        }
    }

    /// True if a request with this `Host` value (name or address, optional port) is served.
    pub fn allows(&self, host: &str) -> bool {
        let name = host_name(host).trim_end_matches('.').to_ascii_lowercase();
        if let Ok(ip) = name.parse::<IpAddr>() {
            return ip.is_loopback() || ip == self.listen || self.listen.is_unspecified();
        }
        name == "localhost" || name.ends_with(".localhost") || self.names.contains(&name)
    }
}

/// The host part of a `Host` header: `[v6]:port`, `name:port`, `v4:port` or without a port.
fn host_name(host: &str) -> &str {
    if host.parse::<IpAddr>().is_ok() {
        return host; // a bare IPv6 address, whose colons are not a port
    }
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Axum middleware: 403 for a request whose `Host` (or HTTP/2 authority) is not allowed.
/// A request with neither is let through: browsers always send `Host`, and only a browser
/// can be tricked into a rebinding attack.
pub async fn check(State(allowed): State<Arc<AllowedHosts>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    match host {
        Some(h) if !allowed.allows(&h) => (
            StatusCode::FORBIDDEN,
            format!(
                "host {h:?} is not served here (DNS rebinding defence): use localhost or the \
                 listen address, or start `shoji trace serve` with --allow-host NAME"
            ),
        )
            .into_response(),
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_the_listen_address_are_allowed_others_are_not() {
        let a = AllowedHosts::new("127.0.0.1".parse().unwrap(), &["Trace.Example.".into()]);
        for ok in [
            "localhost",
            "localhost:16686",
            "LOCALHOST.",
            "app.localhost:1",
            "127.0.0.1:16686",
            "127.8.9.1",
            "[::1]:16686",
            "::1",
            "trace.example:80",
        ] {
            assert!(a.allows(ok), "{ok} should be allowed");
        }
        for bad in [
            "evil.example",
            "evil.example:16686",
            "localhost.evil.example",
            "10.0.0.1:16686",
            "[fe80::1]:1",
            "",
        ] {
            assert!(!a.allows(bad), "{bad} should be refused");
        }
        let any = AllowedHosts::new("0.0.0.0".parse().unwrap(), &[]);
        assert!(any.allows("10.0.0.1:16686"));
        assert!(!any.allows("evil.example"));
        let one = AllowedHosts::new("10.0.0.2".parse().unwrap(), &[]);
        assert!(one.allows("10.0.0.2:4318") && !one.allows("10.0.0.3:4318"));
    }
}
