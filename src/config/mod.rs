//! smtpd.conf: the parsed config (`Config`), and the per-role views the
//! parent sends (`view`).
//!
//! This is the foundation's subset of OpenSMTPD's grammar: comments, blank
//! lines, and `listen on (ADDRESS|localhost|INTERFACE) [port N] [hostname
//! NAME]`. Everything else is refused with `FILE:LINE: message`, never
//! guessed at; the full grammar comes with its own issue.

#![forbid(unsafe_code)]

pub mod view;

use std::fmt;
use std::net::IpAddr;

/// Where a `listen on` binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenOn {
    /// An address literal.
    Addr(IpAddr),
    /// `localhost`: 127.0.0.1 and ::1.
    Localhost,
    /// An interface name: all its addresses.
    Interface(String),
}

/// One `listen on` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub on: ListenOn,
    pub port: u16,
    pub hostname: Option<String>,
}

/// The whole config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub listens: Vec<Listen>,
}

/// A config error, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Read and parse `path`.
pub fn load(path: &str) -> Result<Config, Vec<ConfigError>> {
    match std::fs::read(path) {
        Ok(bytes) => parse(path, &bytes),
        Err(e) => Err(vec![ConfigError {
            file: path.into(),
            line: 0,
            message: format!("cannot read: {e}"),
        }]),
    }
}

/// Parse config text; all errors are collected, not just the first.
pub fn parse(file: &str, bytes: &[u8]) -> Result<Config, Vec<ConfigError>> {
    let mut cfg = Config::default();
    let mut errors = Vec::new();
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            return Err(vec![ConfigError {
                file: file.into(),
                line,
                message: "not valid UTF-8".into(),
            }]);
        }
    };
    for (i, raw) in text.lines().enumerate() {
        let err = |message: String| ConfigError {
            file: file.into(),
            line: i + 1,
            message,
        };
        let content = raw.split('#').next().unwrap_or("");
        let words: Vec<&str> = content.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        match words.as_slice() {
            ["listen", "on", rest @ ..] => match parse_listen(rest) {
                Ok(l) => cfg.listens.push(l),
                Err(m) => errors.push(err(m)),
            },
            [first, ..] => {
                errors.push(err(format!("syntax error: `{first}` is not supported yet")))
            }
            [] => {}
        }
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

fn parse_listen(words: &[&str]) -> Result<Listen, String> {
    let (target, mut rest) = words
        .split_first()
        .ok_or("listen on: missing address or interface")?;
    let on = if *target == "localhost" {
        ListenOn::Localhost
    } else if let Ok(a) = target.parse::<IpAddr>() {
        ListenOn::Addr(a)
    } else if target.len() <= 15
        && target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        ListenOn::Interface(target.to_string())
    } else {
        return Err(format!("listen on: bad address or interface `{target}`"));
    };
    let mut listen = Listen {
        on,
        port: 25,
        hostname: None,
    };
    while let Some((kw, after)) = rest.split_first() {
        let (value, after) = after
            .split_first()
            .ok_or(format!("listen on: `{kw}` needs a value"))?;
        match *kw {
            "port" => {
                listen.port = match value.parse::<u16>() {
                    Ok(p) if p > 0 => p,
                    _ => return Err(format!("listen on: invalid port `{value}`")),
                }
            }
            "hostname" => listen.hostname = Some(value.trim_matches('"').to_string()),
            _ => return Err(format!("listen on: option `{kw}` is not supported yet")),
        }
        rest = after;
    }
    Ok(listen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_lines() {
        let c = parse("t", b"# comment\nlisten on localhost\nlisten on 127.0.0.1 port 2525 hostname mx.example\n\nlisten on lo\n").unwrap();
        assert_eq!(c.listens.len(), 3);
        assert_eq!(c.listens[0].on, ListenOn::Localhost);
        assert_eq!(c.listens[1].port, 2525);
        assert_eq!(c.listens[1].hostname.as_deref(), Some("mx.example"));
        assert_eq!(c.listens[2].on, ListenOn::Interface("lo".into()));
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse("smtpd.conf", b"listen on localhost port 0\nbogus\n").unwrap_err();
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0].to_string(),
            "smtpd.conf:1: listen on: invalid port `0`"
        );
        assert_eq!(e[1].line, 2);
        assert!(parse("t", b"\xff").is_err());
    }
}
