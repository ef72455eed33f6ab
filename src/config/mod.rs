//! smtpd.conf: OpenSMTPD's grammar, read by `lexer` and `parser` into the
//! typed `ast`, checked by `check`, printed back by `print`, and cut into
//! per-role `view`s that the parent sends after exec.
//!
//! `smtpd -n` is `load` then printing the errors; nothing that fails here
//! ever starts a daemon.

#![forbid(unsafe_code)]

pub mod ast;
pub mod check;
pub mod lexer;
pub mod parser;
pub mod print;
pub mod relay;
pub mod view;

pub use ast::Config;
use std::fmt;

/// A config error or warning, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 0 when it concerns the whole file.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

/// A config that passed every check, and the warnings it earned.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<ConfigError>,
}

/// Read, parse and check `path`, with `-D` macros.
pub fn load(path: &str, defines: &[(String, String)]) -> Result<Loaded, Vec<ConfigError>> {
    let bytes = std::fs::read(path).map_err(|e| {
        vec![ConfigError {
            file: path.into(),
            line: 0,
            message: format!("cannot read: {e}"),
        }]
    })?;
    parse(path, &bytes, defines)
}

/// Parse and check config text as if read from `name`.
pub fn parse(
    name: &str,
    bytes: &[u8],
    defines: &[(String, String)],
) -> Result<Loaded, Vec<ConfigError>> {
    let mut p = parser::Parser::new(defines);
    p.file(name, bytes);
    let (config, mut errors) = p.finish();
    let report = check::check(&config, name);
    errors.extend(report.errors);
    if errors.is_empty() {
        Ok(Loaded {
            config,
            warnings: report.warnings,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests;
