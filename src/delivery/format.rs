//! `%{...}` formats in an `mda` command, without ever putting envelope
//! data into the command text (A1).
//!
//! OpenSMTPD expands `mda "/usr/lib/dovecot/deliver -d %{user.username}"`
//! by pasting the value, escaped, into the text the shell parses. Here a
//! format becomes a reference to the environment variable that already
//! holds the value (see `mda.rs`): the shell expands it at run time, as
//! data, so no byte of an address is ever parsed as shell syntax. The
//! reference is quoted as its place in the command needs: `"${SENDER}"`
//! outside quotes, `${SENDER}` inside double quotes; inside single quotes
//! nothing expands, so a format there is an error. `.user` and `.domain`
//! use the shell's own pattern removal (`${SENDER%@*}`, `${SENDER##*@}`).

#![forbid(unsafe_code)]

/// The formats, and the variable that holds each value.
const FORMATS: &[(&str, &str)] = &[
    ("sender", "SENDER"),
    ("rcpt", "ORIGINAL_RECIPIENT"),
    ("dest", "RECIPIENT"),
    ("user.username", "USER"),
    ("user.directory", "HOME"),
];

/// The command with its formats turned into variable references.
pub fn shell_command(command: &str) -> Result<String, String> {
    #[derive(PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let mut out = String::with_capacity(command.len());
    let mut quote = Quote::None;
    let mut chars = command.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if quote != Quote::Single => {
                out.push(c);
                if let Some((_, next)) = chars.next() {
                    out.push(next);
                }
            }
            '\'' if quote != Quote::Double => {
                quote = if quote == Quote::Single {
                    Quote::None
                } else {
                    Quote::Single
                };
                out.push(c);
            }
            '"' if quote != Quote::Single => {
                quote = if quote == Quote::Double {
                    Quote::None
                } else {
                    Quote::Double
                };
                out.push(c);
            }
            '%' if command[i..].starts_with("%{") => {
                let end = command[i..]
                    .find('}')
                    .ok_or_else(|| format!("unterminated format in {command:?}"))?;
                let name = &command[i + 2..i + end];
                if quote == Quote::Single {
                    return Err(format!("%{{{name}}} inside single quotes cannot expand"));
                }
                let reference = reference(name)?;
                if quote == Quote::Double {
                    out.push_str(&reference);
                } else {
                    out.push('"');
                    out.push_str(&reference);
                    out.push('"');
                }
                // Skip the format's characters.
                while chars.peek().is_some_and(|&(j, _)| j <= i + end) {
                    chars.next();
                }
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// `${VAR}`, `${VAR%@*}` (.user) or `${VAR##*@}` (.domain) for a format.
fn reference(name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    if let Some(&(_, var)) = FORMATS.iter().find(|(f, _)| *f == lower) {
        return Ok(format!("${{{var}}}"));
    }
    for (suffix, op) in [(".user", "%@*"), (".domain", "##*@")] {
        if let Some(base) = lower.strip_suffix(suffix) {
            if let Some(&(_, var)) = FORMATS
                .iter()
                .find(|(f, _)| *f == base && !f.starts_with("user."))
            {
                return Ok(format!("${{{var}{op}}}"));
            }
        }
    }
    Err(format!("unknown format %{{{name}}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_become_quoted_variable_references() {
        assert_eq!(
            shell_command("/usr/lib/dovecot/deliver -d %{user.username}").unwrap(),
            r#"/usr/lib/dovecot/deliver -d "${USER}""#
        );
        assert_eq!(
            shell_command(r#"procmail -f "%{sender}" -a %{rcpt.user}@%{RCPT.DOMAIN}"#).unwrap(),
            r#"procmail -f "${SENDER}" -a "${ORIGINAL_RECIPIENT%@*}"@"${ORIGINAL_RECIPIENT##*@}""#
        );
        assert_eq!(shell_command("cat > ~/x").unwrap(), "cat > ~/x");
        assert_eq!(
            shell_command(r#"echo \%{sender}"#).unwrap(),
            r#"echo \%{sender}"#
        );
    }

    #[test]
    fn what_cannot_be_expanded_safely_is_refused() {
        assert!(shell_command("echo '%{sender}'").is_err());
        assert!(shell_command("echo %{nosuch}").is_err());
        assert!(shell_command("echo %{sender").is_err());
        assert!(shell_command("echo %{user.username.user}").is_err());
    }

    /// The point of it all: an address full of shell syntax reaches the
    /// command as one argument, unparsed.
    #[test]
    fn a_hostile_value_stays_data() {
        let cmd = shell_command("printf '%s|' %{sender} %{sender.user}").unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .env_clear()
            .env("SENDER", "a;touch /tmp/pwned $(id) `id`\"@x'y")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "a;touch /tmp/pwned $(id) `id`\"@x'y|a;touch /tmp/pwned $(id) `id`\"|"
        );
    }
}
