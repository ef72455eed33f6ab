//! smtpd.conf tokens, with OpenSMTPD's lexical rules:
//! - `#` starts a comment to the end of the line (outside quotes);
//! - a backslash before a newline joins the lines;
//! - "..." and '...' are strings (never keywords, never expanded); inside
//!   them a backslash escapes the quote, a blank or a newline;
//! - an unquoted word starts with a letter, digit, `:` or `_` and goes on
//!   over letters, digits and punctuation other than `(){}<>!=#,`;
//! - a word of digits (optionally after `-`) ending at a blank, `)`, `,`,
//!   `/`, `}` or `=` is a number;
//! - `$name` at the start of a token is replaced by the macro's value,
//!   which is then read as input (so a macro may hold several tokens);
//! - any other character is a token of its own.
//!
//! Everything is bounded: token length, macro expansions per file.

use std::collections::HashMap;

/// Longest token (OpenSMTPD's buffer is 8096 bytes).
pub const MAX_TOKEN: usize = 8096;
/// Most macro expansions while reading one file: a macro that expands to
/// itself (`a = "$a"` is not, since quoted values are not expanded, but
/// `-D` values are read as input) cannot loop forever.
pub const MAX_EXPANSIONS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// An unquoted word: a keyword or a name.
    Word(String),
    /// A quoted string.
    Str(String),
    /// A number.
    Num(i64),
    /// A single character: `{ } < > , = ! ( )` and anything unexpected.
    Sym(char),
    /// End of a line (of a statement).
    Nl,
    /// End of the input.
    Eof,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub tok: Tok,
    pub line: usize,
}

/// A lexical error, at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub line: usize,
    pub message: String,
}

/// Reads tokens from one file's bytes. Macro values are pushed back into
/// the input, as OpenSMTPD does.
pub struct Lexer<'a> {
    input: &'a [u8],
    pos: usize,
    /// Pushed-back bytes (macro values), read before `input`, last first.
    pushback: Vec<u8>,
    line: usize,
    expansions: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Lexer {
            input,
            pos: 0,
            pushback: Vec::new(),
            line: 1,
            expansions: 0,
        }
    }

    pub fn line(&self) -> usize {
        self.line
    }

    /// Next byte, joining backslash-newline outside quotes.
    fn getc(&mut self, in_quotes: bool) -> Option<u8> {
        let c = self.raw()?;
        if !in_quotes && c == b'\\' {
            match self.raw() {
                Some(b'\n') => {
                    self.line += 1;
                    return self.getc(false);
                }
                Some(n) => self.unget(n),
                None => {}
            }
        }
        Some(c)
    }

    fn raw(&mut self) -> Option<u8> {
        if let Some(c) = self.pushback.pop() {
            return Some(c);
        }
        let c = *self.input.get(self.pos)?;
        self.pos += 1;
        Some(c)
    }

    fn unget(&mut self, c: u8) {
        self.pushback.push(c);
    }

    /// Skip to the end of the line after an error, so the parser can go on
    /// with the next statement and report more than one error.
    pub fn skip_line(&mut self) {
        while let Some(c) = self.getc(false) {
            if c == b'\n' {
                self.unget(c);
                return;
            }
        }
    }

    /// The next token; `macros` holds the macros defined so far.
    pub fn next(&mut self, macros: &HashMap<String, String>) -> Result<Token, LexError> {
        loop {
            let mut c = self.getc(false);
            while matches!(c, Some(b' ' | b'\t' | b'\r')) {
                c = self.getc(false);
            }
            let line = self.line;
            let err = |message: String| LexError { line, message };
            if c == Some(b'#') {
                while !matches!(c, Some(b'\n') | None) {
                    c = self.getc(false);
                }
            }
            let Some(c) = c else {
                return Ok(Token {
                    tok: Tok::Eof,
                    line,
                });
            };
            match c {
                b'\n' => {
                    self.line += 1;
                    return Ok(Token { tok: Tok::Nl, line });
                }
                b'$' => {
                    let mut name = String::new();
                    while let Some(n) = self.getc(false) {
                        if n.is_ascii_alphanumeric() || n == b'_' {
                            name.push(n as char);
                            if name.len() > MAX_TOKEN {
                                return Err(err("string too long".into()));
                            }
                        } else {
                            self.unget(n);
                            break;
                        }
                    }
                    let Some(value) = macros.get(&name) else {
                        self.skip_line();
                        return Err(err(format!("macro '{name}' not defined")));
                    };
                    self.expansions += 1;
                    if self.expansions > MAX_EXPANSIONS
                        || self.pushback.len() + value.len() > 1 << 20
                    {
                        self.skip_line();
                        return Err(err("too many macro expansions".into()));
                    }
                    for &b in value.as_bytes().iter().rev() {
                        self.unget(b);
                    }
                    continue;
                }
                b'"' | b'\'' => {
                    return self.quoted(c, line).map(|s| Token {
                        tok: Tok::Str(s),
                        line,
                    })
                }
                b'-' | b'0'..=b'9' => {
                    if let Some(t) = self.number(c, line)? {
                        return Ok(Token { tok: t, line });
                    }
                    // Not a number: read as a word (e.g. 127.0.0.1), or
                    // a lone '-' as a symbol.
                    if c == b'-' {
                        return Ok(Token {
                            tok: Tok::Sym('-'),
                            line,
                        });
                    }
                    return self.word(c, line).map(|w| Token {
                        tok: Tok::Word(w),
                        line,
                    });
                }
                c if c.is_ascii_alphanumeric() || c == b':' || c == b'_' => {
                    return self.word(c, line).map(|w| Token {
                        tok: Tok::Word(w),
                        line,
                    });
                }
                c if c.is_ascii() => {
                    return Ok(Token {
                        tok: Tok::Sym(c as char),
                        line,
                    })
                }
                _ => {
                    self.skip_line();
                    return Err(err("syntax error: unexpected byte outside quotes".into()));
                }
            }
        }
    }

    fn quoted(&mut self, quote: u8, line: usize) -> Result<String, LexError> {
        let mut buf = Vec::new();
        loop {
            let Some(mut c) = self.getc(true) else {
                return Err(LexError {
                    line,
                    message: "unterminated quoted string".into(),
                });
            };
            if c == b'\n' {
                self.line += 1;
            } else if c == b'\\' {
                match self.getc(true) {
                    Some(n) if n == quote || n == b' ' || n == b'\t' => c = n,
                    Some(b'\n') => {
                        self.line += 1;
                        continue;
                    }
                    Some(n) => self.unget(n),
                    None => {
                        return Err(LexError {
                            line,
                            message: "unterminated quoted string".into(),
                        })
                    }
                }
            } else if c == quote {
                break;
            } else if c == 0 {
                self.skip_line();
                return Err(LexError {
                    line,
                    message: "syntax error: NUL in string".into(),
                });
            }
            buf.push(c);
            if buf.len() >= MAX_TOKEN {
                self.skip_line();
                return Err(LexError {
                    line,
                    message: "string too long".into(),
                });
            }
        }
        String::from_utf8(buf).map_err(|_| LexError {
            line,
            message: "string is not valid UTF-8".into(),
        })
    }

    /// A number, or None (everything read is pushed back).
    fn number(&mut self, first: u8, line: usize) -> Result<Option<Tok>, LexError> {
        let mut buf = vec![first];
        loop {
            match self.getc(false) {
                Some(c) if c.is_ascii_digit() => {
                    buf.push(c);
                    if buf.len() > MAX_TOKEN {
                        return Err(LexError {
                            line,
                            message: "string too long".into(),
                        });
                    }
                }
                other => {
                    let ends = match other {
                        None => true,
                        Some(c) => c.is_ascii_whitespace() || b"),/}=".contains(&c),
                    };
                    if let Some(c) = other {
                        self.unget(c);
                    }
                    if ends && buf != b"-" {
                        let s = std::str::from_utf8(&buf).unwrap_or("");
                        return match s.parse::<i64>() {
                            Ok(n) => Ok(Some(Tok::Num(n))),
                            Err(_) => Err(LexError {
                                line,
                                message: format!("\"{s}\" invalid number: too large"),
                            }),
                        };
                    }
                    // Give back all but the first byte: the caller re-reads.
                    for &b in buf[1..].iter().rev() {
                        self.unget(b);
                    }
                    return Ok(None);
                }
            }
        }
    }

    fn word(&mut self, first: u8, line: usize) -> Result<String, LexError> {
        let mut buf = vec![first];
        while let Some(c) = self.getc(false) {
            let allowed = c.is_ascii_alphanumeric()
                || (c.is_ascii_punctuation() && !b"(){}<>!=#,".contains(&c));
            if !allowed {
                self.unget(c);
                break;
            }
            buf.push(c);
            if buf.len() >= MAX_TOKEN {
                self.skip_line();
                return Err(LexError {
                    line,
                    message: "string too long".into(),
                });
            }
        }
        // Only ASCII bytes reach here.
        Ok(String::from_utf8(buf).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str, macros: &[(&str, &str)]) -> Vec<Tok> {
        let m: HashMap<String, String> = macros
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let mut l = Lexer::new(s.as_bytes());
        let mut out = Vec::new();
        loop {
            let t = l.next(&m).unwrap();
            if t.tok == Tok::Eof {
                return out;
            }
            out.push(t.tok);
        }
    }

    fn w(s: &str) -> Tok {
        Tok::Word(s.into())
    }

    #[test]
    fn words_numbers_strings_symbols() {
        assert_eq!(
            toks("listen on 127.0.0.1 port 25 # c\n", &[]),
            vec![
                w("listen"),
                w("on"),
                w("127.0.0.1"),
                w("port"),
                Tok::Num(25),
                Tok::Nl
            ]
        );
        assert_eq!(
            toks("table t { a, b=c } <t> !", &[]),
            vec![
                w("table"),
                w("t"),
                Tok::Sym('{'),
                w("a"),
                Tok::Sym(','),
                w("b"),
                Tok::Sym('='),
                w("c"),
                Tok::Sym('}'),
                Tok::Sym('<'),
                w("t"),
                Tok::Sym('>'),
                Tok::Sym('!')
            ]
        );
        assert_eq!(
            toks("\"a \\\" b\" 'x'", &[]),
            vec![Tok::Str("a \" b".into()), Tok::Str("x".into())]
        );
        assert_eq!(
            toks("file:/etc/mail/aliases", &[]),
            vec![w("file:/etc/mail/aliases")]
        );
    }

    #[test]
    fn continuation_and_lines() {
        let mut l = Lexer::new(b"a \\\n b\nc");
        let m = HashMap::new();
        assert_eq!(
            l.next(&m).unwrap(),
            Token {
                tok: w("a"),
                line: 1
            }
        );
        assert_eq!(
            l.next(&m).unwrap(),
            Token {
                tok: w("b"),
                line: 2
            }
        );
        assert_eq!(l.next(&m).unwrap().tok, Tok::Nl);
        assert_eq!(
            l.next(&m).unwrap(),
            Token {
                tok: w("c"),
                line: 3
            }
        );
    }

    #[test]
    fn macros_expand_to_tokens() {
        assert_eq!(
            toks("listen on $x", &[("x", "lo tls")]),
            vec![w("listen"), w("on"), w("lo"), w("tls")]
        );
        let mut l = Lexer::new(b"$nope");
        assert!(l
            .next(&HashMap::new())
            .unwrap_err()
            .message
            .contains("not defined"));
    }

    #[test]
    fn self_referencing_macro_is_bounded() {
        let m: HashMap<String, String> = [("a".to_string(), "$a".to_string())].into();
        let mut l = Lexer::new(b"$a");
        assert!(l.next(&m).unwrap_err().message.contains("too many"));
    }

    #[test]
    fn unterminated_string_is_an_error() {
        let mut l = Lexer::new(b"\"abc");
        assert!(l.next(&HashMap::new()).is_err());
    }
}
