//! smtpctl's command line, as OpenSMTPD's parser.c reads it: the commands
//! form a tree of words; each argument is matched against the children
//! of the node reached so far, exactly first, then as the unique prefix
//! of a keyword ("sh q" is "show queue"). A command that does not match
//! lists the possibilities, as OpenSMTPD's does.

/// What one word of a command pattern accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    Keyword(&'static str),
    /// 8 hex digits, not zero.
    MsgId,
    /// 16 hex digits, not zero.
    EvpId,
    /// Any word.
    Str,
}

impl Word {
    fn from(w: &'static str) -> Word {
        match w {
            "<msgid>" => Word::MsgId,
            "<evpid>" => Word::EvpId,
            "<str>" => Word::Str,
            k => Word::Keyword(k),
        }
    }

    fn text(self) -> &'static str {
        match self {
            Word::Keyword(k) => k,
            Word::MsgId => "<msgid>",
            Word::EvpId => "<evpid>",
            Word::Str => "<str>",
        }
    }

    fn matches(self, arg: &str) -> Option<Param> {
        let hex = |n: usize| {
            (arg.len() == n && arg.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u64::from_str_radix(arg, 16).ok())
                .flatten()
                .filter(|&v| v != 0)
        };
        match self {
            Word::Keyword(k) => (k == arg).then_some(Param::None),
            Word::MsgId => hex(8).map(|v| Param::MsgId(v as u32)),
            Word::EvpId => hex(16).map(Param::EvpId),
            Word::Str => Some(Param::Str(arg.to_string())),
        }
    }
}

/// A value an argument gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    None,
    MsgId(u32),
    EvpId(u64),
    Str(String),
}

/// Every command smtpctl knows, in OpenSMTPD's order where it has them.
pub const COMMANDS: &[&str] = &[
    "discover <evpid>",
    "discover <msgid>",
    "log brief",
    "log verbose",
    "monitor",
    "pause envelope <evpid>",
    "pause envelope <msgid>",
    "pause envelope all",
    "pause mda",
    "pause mta",
    "pause smtp",
    "profile <str>",
    "remove <evpid>",
    "remove <msgid>",
    "remove all",
    "resume envelope <evpid>",
    "resume envelope <msgid>",
    "resume envelope all",
    "resume mda",
    "resume mta",
    "resume smtp",
    "schedule <msgid>",
    "schedule <evpid>",
    "schedule all",
    "show envelope <evpid>",
    "show message <msgid>",
    "show message <evpid>",
    "show queue",
    "show queue <msgid>",
    "show stats",
    "show status",
    "stop",
    "trace <str>",
    "uncorrupt <msgid>",
    "unprofile <str>",
    "untrace <str>",
    "update table <str>",
    "encrypt",
    "encrypt <str>",
];

/// A parsed command: its pattern (one of `COMMANDS`) and the values of
/// its `<...>` words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub pattern: &'static str,
    pub params: Vec<Param>,
}

/// Parse `args`; Err is the text to print on stderr (exit status 255).
pub fn parse(args: &[String]) -> Result<Command, String> {
    let patterns: Vec<(&'static str, Vec<Word>)> = COMMANDS
        .iter()
        .map(|p| (*p, p.split(' ').map(Word::from).collect()))
        .collect();
    // The path taken so far: one word per argument.
    let mut path: Vec<Word> = Vec::new();
    let mut params = Vec::new();
    for arg in args {
        let children = children(&patterns, &path);
        let exact = children
            .iter()
            .find_map(|w| w.matches(arg).map(|p| (*w, p)));
        let (word, param) = match exact {
            Some(x) => x,
            None => {
                let mut prefixed = children
                    .iter()
                    .filter(|w| matches!(w, Word::Keyword(k) if k.starts_with(arg.as_str())));
                match (prefixed.next(), prefixed.next()) {
                    (Some(w), None) => (*w, Param::None),
                    _ => return Err(possibilities(&patterns, &path)),
                }
            }
        };
        path.push(word);
        if param != Param::None {
            params.push(param);
        }
    }
    match patterns.iter().find(|(_, words)| *words == path) {
        Some((pattern, _)) => Ok(Command { pattern, params }),
        None => Err(possibilities(&patterns, &path)),
    }
}

/// The distinct words that may follow `path`, in table order.
fn children(patterns: &[(&'static str, Vec<Word>)], path: &[Word]) -> Vec<Word> {
    let mut out: Vec<Word> = Vec::new();
    for (_, words) in patterns {
        if words.len() > path.len() && words[..path.len()] == *path {
            let w = words[path.len()];
            if !out.contains(&w) {
                out.push(w);
            }
        }
    }
    out
}

fn possibilities(patterns: &[(&'static str, Vec<Word>)], path: &[Word]) -> String {
    let next = children(patterns, path);
    if next.is_empty() {
        return "invalid command\n".into();
    }
    let mut out = String::from("possibilities are:\n");
    let prefix: Vec<&str> = path.iter().map(|w| w.text()).collect();
    for w in next {
        let mut line = prefix.clone();
        line.push(w.text());
        out.push_str(&line.join(" "));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, String> {
        let args: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&args)
    }

    #[test]
    fn commands_and_their_values() {
        assert_eq!(p("show queue").unwrap().pattern, "show queue");
        assert_eq!(p("sh q").unwrap().pattern, "show queue");
        let c = p("schedule 0123abcd").unwrap();
        assert_eq!(
            (c.pattern, c.params),
            ("schedule <msgid>", vec![Param::MsgId(0x0123abcd)])
        );
        let c = p("remove 0123abcd00000001").unwrap();
        assert_eq!(c.pattern, "remove <evpid>");
        assert_eq!(c.params, vec![Param::EvpId(0x0123abcd00000001)]);
        assert_eq!(p("remove all").unwrap().pattern, "remove all");
        assert_eq!(
            p("update table aliases").unwrap().params,
            vec![Param::Str("aliases".into())]
        );
    }

    #[test]
    fn bad_commands_list_the_possibilities() {
        let e = p("show").unwrap_err();
        assert!(e.starts_with("possibilities are:\n"), "{e}");
        assert!(
            e.contains("show queue\n") && e.contains("show stats\n"),
            "{e}"
        );
        // "s" is ambiguous (schedule, show, stop).
        assert!(p("s").unwrap_err().contains("\nschedule\n"));
        assert!(p("schedule 123").is_err(), "a msgid is 8 hex digits");
        assert!(p("schedule 00000000").is_err(), "zero is no msgid");
        assert!(p("schedule 0000000g").is_err());
        assert_eq!(p("stop now").unwrap_err(), "invalid command\n");
        assert!(p("").is_err());
    }
}
