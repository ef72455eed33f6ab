//! aliases(5) values: the items an alias, a virtual mapping, an
//! `:include:` file or a `~/.forward` expands to, parsed into [`Item`]s.
//!
//! A value is a comma-separated list, split as OpenSMTPD's
//! `expand_line_split()` (expand.c) does: `\` makes the next character
//! literal, commas inside `"..."` or `'...'` do not split, an unterminated
//! quote or a trailing `\` is an error. Each item is trimmed, empty ones are
//! skipped. An item that is wholly one double-quoted string is taken without
//! its quotes (OpenSMTPD only does this for `"|command"`; we allow it for
//! every kind, so `"error:550 Gone, sorry"` works too). Quotes elsewhere
//! stay in the item, for a command's shell.
//!
//! Each item is, in the order `text_to_expandnode()` (to.c) tries them:
//! - `error:NNN text` or `:error:NNN text` (any case): a reply, `NNN` a
//!   4xx or 5xx code, then a space and a text starting with a letter or
//!   digit; an enhanced code of the same class at the start of the text
//!   (`550 5.1.1 Gone`) is kept apart;
//! - `:include:/path` or `include:/path` (any case): more items, read from
//!   that file;
//! - `|command`: the message piped to a command;
//! - `/path`: the message appended to a file;
//! - `local@domain`: an address, which must pass `smtp::address`'s parser
//!   (so `%`, `!`, `|`, `/` and the other characters it refuses in a local
//!   part are refused here too, where OpenSMTPD takes them);
//! - `user`: letters, digits, `_`, `.`, `-`, `+` (not starting with `-`):
//!   a local user, or another alias.
//!
//! Anything else is an error, never a guess. So is a control character
//! other than tab anywhere in an item, an item over 1023 bytes (OpenSMTPD's
//! `EXPAND_BUFFER`) or a value over 2047 (its `LINE_MAX`). Comments and
//! blank lines are the table's business; files of items (`:include:` and
//! `.forward`) are read by [`parse_lines`], as `fparseln(3)` reads them in
//! OpenSMTPD: `#` starts a comment (unless escaped by `\`), a line ending
//! in `\` continues on the next one.

#![forbid(unsafe_code)]

use crate::smtp::address::{self, Mailbox};
use std::fmt;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The longest value or logical line (OpenSMTPD's `LINE_MAX` with its NUL).
pub const MAX_LINE: usize = 2047;
/// The longest path, command or error item (`EXPAND_BUFFER` with its NUL).
pub const MAX_ITEM: usize = 1023;
/// The longest user name (`SMTPD_MAXLOCALPARTSIZE` with its NUL).
pub const MAX_USER: usize = 255;
/// The largest `:include:` file read.
pub const MAX_INCLUDE_BYTES: u64 = 1 << 20;

/// One expansion item of an aliases(5) value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A local user or another alias, maybe with a sub-address (`joe+box`).
    User(String),
    /// An address, delivered as the match rules decide for it.
    Address(Mailbox),
    /// `/path`: append the message to this file.
    File(String),
    /// `|command`: pipe the message to this command (without the `|`).
    Command(String),
    /// `:include:/path`: the items of this file.
    Include(String),
    /// `error:NNN text`: refuse the recipient with this reply.
    Error(ErrorReply),
}

/// The reply of an `error:` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// 400 to 599.
    pub code: u16,
    /// `X.Y.Z` if the text started with one of the code's class.
    pub enhanced: Option<String>,
    pub text: String,
}

/// Why an item, a value or a file of items was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// The offending item (shortened, escaped), or "" for a whole value.
    pub item: String,
    pub why: String,
}

impl ItemError {
    fn new(item: &str, why: impl Into<String>) -> ItemError {
        let mut shown: String = item.chars().take(80).collect();
        if shown.len() < item.len() {
            shown.push_str("...");
        }
        ItemError {
            item: shown.escape_debug().to_string(),
            why: why.into(),
        }
    }
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.item.is_empty() {
            f.write_str(&self.why)
        } else {
            write!(f, "{}: \"{}\"", self.why, self.item)
        }
    }
}

impl std::error::Error for ItemError {}

/// Parse one table value (`root: a, b, "|cmd"`'s right-hand side).
pub fn parse_value(value: &str) -> Result<Vec<Item>, ItemError> {
    if value.len() > MAX_LINE {
        return Err(ItemError::new("", format!("longer than {MAX_LINE} bytes")));
    }
    split_items(value)?
        .into_iter()
        .map(|(text, quoted)| parse_item(&text, quoted))
        .collect()
}

/// Parse a file of items (`:include:` or `~/.forward`): `#` comments,
/// `\` continuations, items one a line or comma-separated.
pub fn parse_lines(text: &str) -> Result<Vec<Item>, ItemError> {
    let mut items = Vec::new();
    let mut logical = String::new();
    for (n, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let line = strip_comment(line);
        let continued = ends_in_continuation(line);
        logical.push_str(if continued {
            &line[..line.len() - 1]
        } else {
            line
        });
        if logical.len() > MAX_LINE {
            return Err(ItemError::new(
                "",
                format!("line {}: longer than {MAX_LINE} bytes", n + 1),
            ));
        }
        if continued {
            continue;
        }
        let parsed = parse_value(&logical).map_err(|e| ItemError {
            why: format!("line {}: {}", n + 1, e.why),
            ..e
        })?;
        items.extend(parsed);
        logical.clear();
    }
    if !logical.is_empty() {
        items.extend(parse_value(&logical)?);
    }
    Ok(items)
}

/// Read an `:include:` file: a regular file (a FIFO is not waited on, a
/// symbolic link as the last component is not followed), at most
/// `MAX_INCLUDE_BYTES`, UTF-8.
pub fn read_include_file(path: &Path) -> Result<String, String> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    let mut bytes = Vec::new();
    f.take(MAX_INCLUDE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_INCLUDE_BYTES {
        return Err(format!(
            "{}: larger than {MAX_INCLUDE_BYTES} bytes",
            path.display()
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", path.display()))
}

/// Cut a line at the first `#` not preceded by `\` (fparseln's rule).
fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'#' && (i == 0 || b[i - 1] != b'\\') {
            return &line[..i];
        }
    }
    line
}

/// A line ending in `\` that is not itself escaped continues.
fn ends_in_continuation(line: &str) -> bool {
    let b = line.as_bytes();
    match b.len() {
        0 => false,
        1 => b[0] == b'\\',
        n => b[n - 1] == b'\\' && b[n - 2] != b'\\',
    }
}

/// Split a value at unquoted commas; each item comes trimmed, with its
/// escapes resolved, and says whether it was one double-quoted string
/// (whose quotes are then not part of it).
fn split_items(value: &str) -> Result<Vec<(String, bool)>, ItemError> {
    let mut items = Vec::new();
    let mut cur = Cur::default();
    let mut esc = false;
    let (mut dq, mut sq) = (false, false);
    for c in value.chars() {
        if esc {
            cur.push(c);
            esc = false;
            continue;
        }
        match c {
            '\\' => esc = true,
            ',' if !dq && !sq => {
                cur.finish(&mut items)?;
                cur = Cur::default();
            }
            '"' if !sq => {
                dq = !dq;
                if dq && cur.at_start() {
                    // An item opening with a quote: it may be one quoted
                    // string, taken as is (the blanks before it go).
                    cur.text.clear();
                    cur.quoted = Quoted::Open;
                } else if !dq && cur.quoted == Quoted::Open {
                    cur.quoted = Quoted::Closed;
                } else {
                    cur.push(c);
                }
            }
            '\'' if !dq => {
                sq = !sq;
                cur.push(c);
            }
            _ => cur.push(c),
        }
    }
    if esc {
        return Err(ItemError::new(value, "trailing backslash"));
    }
    if dq || sq {
        return Err(ItemError::new(value, "unterminated quote"));
    }
    cur.finish(&mut items)?;
    Ok(items)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Quoted {
    #[default]
    No,
    /// Inside the quotes that opened the item.
    Open,
    /// After them: only blanks may follow.
    Closed,
}

/// The item being split.
#[derive(Debug, Default)]
struct Cur {
    text: String,
    quoted: Quoted,
    /// Text after the closing quote of a quoted item (an error unless blank).
    trailing: bool,
}

impl Cur {
    fn at_start(&self) -> bool {
        self.quoted == Quoted::No && self.text.trim().is_empty()
    }

    fn push(&mut self, c: char) {
        match self.quoted {
            Quoted::Closed if c.is_whitespace() => {}
            Quoted::Closed => self.trailing = true,
            _ => self.text.push(c),
        }
    }

    fn finish(self, items: &mut Vec<(String, bool)>) -> Result<(), ItemError> {
        match self.quoted {
            Quoted::No => {
                let t = self.text.trim();
                if !t.is_empty() {
                    items.push((t.to_string(), false));
                }
            }
            _ if self.trailing => {
                return Err(ItemError::new(
                    &self.text,
                    "text after the closing quote of an item",
                ))
            }
            _ => items.push((self.text, true)),
        }
        Ok(())
    }
}

/// One item, trimmed and unquoted.
fn parse_item(s: &str, quoted: bool) -> Result<Item, ItemError> {
    if quoted && s.is_empty() {
        return Err(ItemError::new(s, "empty quoted item"));
    }
    if s.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ItemError::new(s, "control character in item"));
    }
    let long = |max: usize| ItemError::new(s, format!("item longer than {max} bytes"));
    if let Some(rest) = strip_prefix_ci(s, ":error:").or_else(|| strip_prefix_ci(s, "error:")) {
        if rest.len() > MAX_ITEM {
            return Err(long(MAX_ITEM));
        }
        return parse_error(rest).map(Item::Error).ok_or_else(|| {
            ItemError::new(s, "an error item is error:NNN text, NNN a 4xx or 5xx code")
        });
    }
    if let Some(rest) = strip_prefix_ci(s, ":include:").or_else(|| strip_prefix_ci(s, "include:")) {
        if !rest.starts_with('/') {
            return Err(ItemError::new(s, "an include needs an absolute path"));
        }
        if rest.len() > MAX_ITEM {
            return Err(long(MAX_ITEM));
        }
        return Ok(Item::Include(rest.to_string()));
    }
    if let Some(cmd) = s.strip_prefix('|') {
        if cmd.trim().is_empty() {
            return Err(ItemError::new(s, "empty command"));
        }
        if cmd.len() > MAX_ITEM {
            return Err(long(MAX_ITEM));
        }
        return Ok(Item::Command(cmd.to_string()));
    }
    if s.starts_with('/') {
        if s.len() > MAX_ITEM {
            return Err(long(MAX_ITEM));
        }
        return Ok(Item::File(s.to_string()));
    }
    if s.contains('@') {
        return match address::parse_path(s, false) {
            Ok(Some(m)) => Ok(Item::Address(m)),
            Ok(None) => Err(ItemError::new(s, "empty address")),
            Err(e) => Err(ItemError::new(s, format!("invalid address: {e}"))),
        };
    }
    if s.len() > MAX_USER {
        return Err(long(MAX_USER));
    }
    let user_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+');
    if !s.chars().all(user_char) || s.starts_with('-') {
        return Err(ItemError::new(
            s,
            "not a user, address, /file, |command, :include: or error: item",
        ));
    }
    Ok(Item::User(s.to_string()))
}

/// `NNN text` (to.c's `alias_is_error()`): `[45][0-9][0-9] [a-zA-Z0-9].*`.
fn parse_error(s: &str) -> Option<ErrorReply> {
    let b = s.as_bytes();
    if b.len() < 5
        || !matches!(b[0], b'4' | b'5')
        || !b[1].is_ascii_digit()
        || !b[2].is_ascii_digit()
        || b[3] != b' '
        || !b[4].is_ascii_alphanumeric()
    {
        return None;
    }
    let code: u16 = s[..3].parse().ok()?;
    let text = &s[4..];
    let (enhanced, text) = match text.split_once(' ') {
        Some((e, rest)) if is_enhanced(e, b[0]) && !rest.trim().is_empty() => {
            (Some(e.to_string()), rest.trim_start())
        }
        _ => (None, text),
    };
    Some(ErrorReply {
        code,
        enhanced,
        text: text.to_string(),
    })
}

/// RFC 3463 `class.subject.detail` of the given class digit.
fn is_enhanced(s: &str, class: u8) -> bool {
    let mut parts = s.split('.');
    let ok = |p: Option<&str>, max: usize| {
        p.is_some_and(|p| !p.is_empty() && p.len() <= max && p.bytes().all(|c| c.is_ascii_digit()))
    };
    s.as_bytes().first() == Some(&class)
        && ok(parts.next(), 1)
        && ok(parts.next(), 3)
        && ok(parts.next(), 3)
        && parts.next().is_none()
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::Domain;

    fn addr(local: &str, domain: &str) -> Item {
        Item::Address(Mailbox {
            local: local.into(),
            domain: Domain::Name(domain.into()),
        })
    }

    fn user(s: &str) -> Item {
        Item::User(s.into())
    }

    #[test]
    fn every_kind() {
        let v = parse_value(
            "joe, Jane.Doe+box ,bob@Example.ORG, /var/mail/archive, |/usr/bin/logger -t mail, \
             :include:/etc/mail/staff, INCLUDE:/etc/mail/more, error:550 5.1.1 Gone away, \
             :ERROR:450 try later",
        )
        .unwrap();
        assert_eq!(
            v,
            vec![
                user("joe"),
                user("Jane.Doe+box"),
                addr("bob", "example.org"),
                Item::File("/var/mail/archive".into()),
                Item::Command("/usr/bin/logger -t mail".into()),
                Item::Include("/etc/mail/staff".into()),
                Item::Include("/etc/mail/more".into()),
                Item::Error(ErrorReply {
                    code: 550,
                    enhanced: Some("5.1.1".into()),
                    text: "Gone away".into()
                }),
                Item::Error(ErrorReply {
                    code: 450,
                    enhanced: None,
                    text: "try later".into()
                }),
            ]
        );
    }

    #[test]
    fn quotes_and_escapes() {
        // A single-quoted item keeps its quotes: not a command, an error.
        assert!(parse_value("'|cmd'").is_err());
        let v = parse_value(r#""|/usr/bin/prog -a 'x, y'" , "error:550 No, thanks", |echo "a, b""#)
            .unwrap();
        assert_eq!(
            v,
            vec![
                Item::Command("/usr/bin/prog -a 'x, y'".into()),
                Item::Error(ErrorReply {
                    code: 550,
                    enhanced: None,
                    text: "No, thanks".into()
                }),
                Item::Command("echo \"a, b\"".into()),
            ]
        );
        // Escapes: the backslash goes, the character stays.
        assert_eq!(parse_value(r"\joe").unwrap(), vec![user("joe")]);
        assert_eq!(
            parse_value(r"|echo a\,b").unwrap(),
            vec![Item::Command("echo a,b".into())]
        );
        assert_eq!(
            parse_value(r#""/var/mail/with space""#).unwrap(),
            vec![Item::File("/var/mail/with space".into())]
        );
        // Empty items between commas are skipped.
        assert_eq!(
            parse_value(" a ,, ,b,").unwrap(),
            vec![user("a"), user("b")]
        );
        assert_eq!(parse_value("").unwrap(), vec![]);
    }

    #[test]
    fn bad_items() {
        for bad in [
            "\"unterminated",
            "'unterminated",
            "trailing\\",
            "\"\"",
            "\"a\" b",
            "a b",
            "-oQ",
            "user%host",
            "a%b@example.org",
            "a!b@example.org",
            "@example.org",
            "a@",
            "a@b@c.org",
            "relative/path",
            "|",
            "|  ",
            ":include:relative",
            "include:",
            "error:",
            "error:550",
            "error:550 ",
            "error:550  x",
            "error:250 ok",
            "error:600 x",
            "error:5x0 x",
            "error:550-x",
            "joe\u{1}",
            "/var/mail/x\u{7f}",
            "jörg",
        ] {
            assert!(parse_value(bad).is_err(), "{bad:?}: {:?}", parse_value(bad));
        }
        let long = format!("/{}", "x".repeat(MAX_ITEM));
        assert!(parse_value(&long).is_err());
        assert!(parse_value(&"a,".repeat(MAX_LINE)).is_err());
        assert!(parse_value(&"u".repeat(MAX_USER + 1)).is_err());
        // The message names the item and says why.
        let e = parse_value("joe, a%b@example.org").unwrap_err();
        assert!(e.to_string().contains("a%b@example.org"), "{e}");
        assert!(e.to_string().contains("invalid address"), "{e}");
    }

    #[test]
    fn enhanced_codes() {
        let err = |s: &str| match parse_value(s).unwrap().pop() {
            Some(Item::Error(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(err("error:550 5.1.1 x").enhanced.as_deref(), Some("5.1.1"));
        assert_eq!(err("error:421 4.7.0 x").enhanced.as_deref(), Some("4.7.0"));
        // A class that does not match the code stays in the text.
        let e = err("error:550 4.1.1 x");
        assert_eq!((e.enhanced, e.text.as_str()), (None, "4.1.1 x"));
        // An enhanced code alone is the text.
        let e = err("error:550 5.1.1");
        assert_eq!((e.enhanced, e.text.as_str()), (None, "5.1.1"));
    }

    #[test]
    fn lines() {
        let text = "# a comment\n\
                    joe   # trailing comment\n\
                    \n\
                    a, b\r\n\
                    c, \\\n  d\n\
                    |echo \\# not a comment\n\
                    bob@example.org";
        assert_eq!(
            parse_lines(text).unwrap(),
            vec![
                user("joe"),
                user("a"),
                user("b"),
                user("c"),
                user("d"),
                Item::Command("echo # not a comment".into()),
                addr("bob", "example.org"),
            ]
        );
        // A continuation on the last line is just its end.
        assert_eq!(parse_lines("a, \\").unwrap(), vec![user("a")]);
        let e = parse_lines("a\nb c\n").unwrap_err();
        assert!(e.why.starts_with("line 2:"), "{e}");
        assert!(parse_lines(&format!("{}\n", "a,".repeat(MAX_LINE))).is_err());
    }

    #[test]
    fn include_files() {
        let dir = std::env::temp_dir().join(format!("smtpd-rs-aliases-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("list");
        std::fs::write(&p, "a\nb\n").unwrap();
        assert_eq!(read_include_file(&p).unwrap(), "a\nb\n");
        std::os::unix::fs::symlink(&p, dir.join("link")).unwrap();
        assert!(read_include_file(&dir.join("link")).is_err());
        assert!(read_include_file(&dir).is_err());
        assert!(read_include_file(&dir.join("missing")).is_err());
        std::fs::write(&p, vec![b'a'; MAX_INCLUDE_BYTES as usize + 1]).unwrap();
        assert!(read_include_file(&p).unwrap_err().contains("larger"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Total on hostile input: never a panic.
    #[test]
    fn total_on_random_input() {
        let mut seed: u64 = 0x243f_6a88_85a3_08d3;
        let alphabet: Vec<char> = "ab@.,\"'\\|/:#\n\r\t error:include:550 x-+é\u{1}"
            .chars()
            .collect();
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut x = seed;
            let len = (seed % 48) as usize;
            let s: String = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    alphabet[((x >> 33) % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = parse_value(&s);
            let _ = parse_lines(&s);
        }
    }
}
