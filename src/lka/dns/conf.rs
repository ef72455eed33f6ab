//! /etc/resolv.conf and /etc/hosts, parsed the way the C library does for
//! the parts a mail relay needs: `nameserver` lines, `options timeout:`
//! and `attempts:`, and the address/name pairs of the hosts file. Both
//! files are local but may be large or odd: reads are capped and parsing is
//! total (a line we do not understand is skipped, never an error).

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// The port name servers listen on.
pub const DNS_PORT: u16 = 53;
/// At most this many servers are used, as glibc's MAXNS.
pub const MAX_SERVERS: usize = 3;
/// Bytes read from either file; the rest is ignored (a hosts file this
/// large is a mistake, not a configuration).
const MAX_FILE: u64 = 1 << 20;
/// Names kept from the hosts file, so a huge file cannot eat lka's memory.
const MAX_HOST_NAMES: usize = 10_000;

/// The name servers and the retry policy from resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// Servers in the order they are tried; never empty.
    pub servers: Vec<SocketAddr>,
    /// How long to wait for one server's reply (`options timeout:N`).
    pub timeout: Duration,
    /// Rounds over the server list (`options attempts:N`).
    pub attempts: u32,
}

impl Default for ResolvConf {
    /// The C library's defaults: a server on the local host, 5 s, 2 rounds.
    fn default() -> Self {
        ResolvConf {
            servers: vec![SocketAddr::from(([127, 0, 0, 1], DNS_PORT))],
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}

impl ResolvConf {
    /// Servers given explicitly (tests, or a `port` other than 53), with
    /// the default timeout and attempts.
    pub fn with_servers(servers: Vec<SocketAddr>) -> ResolvConf {
        let mut conf = ResolvConf::default();
        if !servers.is_empty() {
            conf.servers = servers;
        }
        conf
    }

    /// Parses the text of a resolv.conf; never fails.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        let mut servers = Vec::new();
        for line in text.lines() {
            // Both comment characters are accepted at the start of a line
            // by glibc; we also cut trailing comments, which is harmless.
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_ascii_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(parse_server_ip) {
                        if servers.len() < MAX_SERVERS {
                            servers.push(SocketAddr::new(ip, DNS_PORT));
                        }
                    }
                }
                Some("options") => {
                    for opt in words {
                        // glibc's caps: RES_MAXRETRANS 30 s, RES_MAXRETRY 5.
                        if let Some(n) = opt.strip_prefix("timeout:").and_then(num) {
                            conf.timeout = Duration::from_secs(n.clamp(1, 30).into());
                        } else if let Some(n) = opt.strip_prefix("attempts:").and_then(num) {
                            conf.attempts = n.clamp(1, 5);
                        }
                    }
                }
                _ => {}
            }
        }
        if !servers.is_empty() {
            conf.servers = servers;
        }
        conf
    }

    /// Reads `path` (normally /etc/resolv.conf); a missing or unreadable
    /// file gives the defaults, as in the C library.
    pub fn load(path: &Path) -> ResolvConf {
        match read_capped(path) {
            Some(text) => ResolvConf::parse(&text),
            None => ResolvConf::default(),
        }
    }
}

/// A nameserver address; a link-local IPv6 with a `%zone` suffix cannot be
/// expressed without the interface index, so it is skipped.
fn parse_server_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

fn num(s: &str) -> Option<u32> {
    s.parse().ok()
}

fn read_capped(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The hosts file: lower-cased names (and aliases) to their addresses, in
/// file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts {
    names: HashMap<String, Vec<IpAddr>>,
}

impl Hosts {
    /// Parses the text of a hosts file; never fails.
    pub fn parse(text: &str) -> Hosts {
        let mut names: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_ascii_whitespace();
            let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
                continue;
            };
            for name in words {
                let key = normalize(name);
                if key.is_empty() {
                    continue;
                }
                if !names.contains_key(&key) && names.len() >= MAX_HOST_NAMES {
                    continue;
                }
                let addrs = names.entry(key).or_default();
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
        }
        Hosts { names }
    }

    /// Reads `path` (normally /etc/hosts); a missing file is an empty one.
    pub fn load(path: &Path) -> Hosts {
        read_capped(path)
            .map(|t| Hosts::parse(&t))
            .unwrap_or_default()
    }

    /// The addresses listed for `name` (case-insensitive, trailing dot
    /// ignored), if any.
    pub fn lookup(&self, name: &str) -> Option<&[IpAddr]> {
        self.names.get(&normalize(name)).map(Vec::as_slice)
    }
}

/// The form names are compared in: ASCII lower case, no trailing dot.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_servers_and_options() {
        let c = ResolvConf::parse(
            "# comment\n; other comment\nsearch example.org\nnameserver 10.0.0.1\n\
             nameserver ::1 # trailing\nnameserver fe80::1%eth0\nnameserver bogus\n\
             nameserver 10.0.0.2\nnameserver 10.0.0.3\noptions ndots:2 timeout:3 attempts:4\n",
        );
        assert_eq!(
            c.servers,
            vec![
                "10.0.0.1:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap(),
                "10.0.0.2:53".parse().unwrap(),
            ]
        );
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.attempts, 4);
    }

    #[test]
    fn resolv_conf_defaults_and_caps() {
        assert_eq!(ResolvConf::parse(""), ResolvConf::default());
        assert_eq!(ResolvConf::default().servers[0].to_string(), "127.0.0.1:53");
        let c = ResolvConf::parse("options timeout:0 attempts:99\noptions timeout:x\n");
        assert_eq!(c.timeout, Duration::from_secs(1));
        assert_eq!(c.attempts, 5);
        let c = ResolvConf::parse("options timeout:1000\n");
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(
            ResolvConf::load(Path::new("/nonexistent/resolv.conf")),
            ResolvConf::default()
        );
    }

    #[test]
    fn hosts_names_and_aliases() {
        let h = Hosts::parse(
            "127.0.0.1 localhost\n::1 localhost ip6-localhost # v6\n\
             192.0.2.7 Mail.Example.COM. mail\n# 192.0.2.8 commented\nbogus line\n\
             192.0.2.9 mail\n",
        );
        assert_eq!(
            h.lookup("localhost").unwrap(),
            &[
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(
            h.lookup("mail.example.com.").unwrap(),
            &["192.0.2.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(h.lookup("MAIL").unwrap().len(), 2);
        assert!(h.lookup("commented").is_none());
        assert!(h.lookup("line").is_none());
    }

    #[test]
    fn total_on_garbage() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200 {
            let text: String = (0..200)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b" \n#;:.0123456789abcdefnameserveroptionstimeout"[(x % 45) as usize] as char
                })
                .collect();
            let c = ResolvConf::parse(&text);
            assert!(!c.servers.is_empty() && c.servers.len() <= MAX_SERVERS);
            let _ = Hosts::parse(&text);
        }
    }
}
