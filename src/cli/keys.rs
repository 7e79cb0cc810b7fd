//! Turns key options into a `bfc::Key`: a password from a file, stdin, the command line or a
//! TTY prompt, or a raw keyfile.
use super::{ReadKeyArgs, UsageError};
use crate::bfc::Key;
use anyhow::Context;
use std::io::{BufRead, IsTerminal};
use std::path::Path;

/// First line of `path` ("-" = stdin), without the newline.
pub fn password_from_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut line = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
    } else {
        let f = std::fs::File::open(path)
            .with_context(|| format!("opening password file {}", path.display()))?;
        std::io::BufReader::new(f)
            .read_line(&mut line)
            .with_context(|| format!("reading password file {}", path.display()))?;
    }
    let p = line.trim_end_matches(['\n', '\r']);
    if p.is_empty() {
        return Err(UsageError(format!("password file {} is empty", path.display())).into());
    }
    Ok(p.as_bytes().to_vec())
}

/// Asks for a password on the terminal without echo.
pub fn prompt_password(prompt: &str) -> anyhow::Result<Vec<u8>> {
    use rustix::termios;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("opening /dev/tty for the password prompt")?;
    let old = termios::tcgetattr(&tty).context("reading terminal settings")?;
    let mut quiet = old.clone();
    quiet.local_modes.remove(termios::LocalModes::ECHO);
    termios::tcsetattr(&tty, termios::OptionalActions::Flush, &quiet)
        .context("turning off echo")?;
    use std::io::Write;
    let mut out = &tty;
    let _ = write!(out, "{prompt}");
    let _ = out.flush();
    let mut line = String::new();
    let r = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = termios::tcsetattr(&tty, termios::OptionalActions::Flush, &old);
    let _ = writeln!(out);
    r.context("reading the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).as_bytes().to_vec())
}

/// The key given by read options, if any.
pub fn read_key(a: &ReadKeyArgs) -> anyhow::Result<Option<Key>> {
    if let Some(p) = &a.password {
        return Ok(Some(Key::Password(p.as_bytes().to_vec())));
    }
    if let Some(f) = &a.password_file {
        return Ok(Some(Key::Password(password_from_file(f)?)));
    }
    if let Some(k) = &a.keyfile {
        return Ok(Some(
            Key::from_keyfile(k).with_context(|| format!("reading keyfile {}", k.display()))?,
        ));
    }
    Ok(None)
}

/// The key for an encrypted container: from the options, else a prompt when stdin is a TTY.
pub fn key_for_encrypted(a: &ReadKeyArgs, file: &Path) -> anyhow::Result<Key> {
    if let Some(k) = read_key(a)? {
        return Ok(k);
    }
    if std::io::stdin().is_terminal() {
        return Ok(Key::Password(prompt_password(&format!(
            "Password for {}: ",
            file.display()
        ))?));
    }
    Err(UsageError(format!(
        "{} is encrypted: give --password-file FILE, -K KEYFILE or -p PASSWORD",
        file.display()
    ))
    .into())
}
