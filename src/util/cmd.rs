//! Running external programs with errors that show the command line and the
//! tail of its stderr.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Result, bail};

/// How many stderr lines an error message carries.
const STDERR_TAIL: usize = 15;

#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    dir: Option<std::path::PathBuf>,
}

impl Cmd {
    pub fn new(program: impl Into<OsString>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            dir: None,
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Run this command through `wrapper` (e.g. `unshare … --`): the
    /// wrapper's program and arguments come first.
    pub fn under(self, wrapper: &[&str]) -> Self {
        let Some((program, args)) = wrapper.split_first() else {
            return self;
        };
        let mut all: Vec<OsString> = args.iter().map(OsString::from).collect();
        all.push(self.program);
        all.extend(self.args);
        Cmd {
            program: program.into(),
            args: all,
            ..self
        }
    }

    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    pub fn dir(mut self, d: &Path) -> Self {
        self.dir = Some(d.to_path_buf());
        self
    }

    /// The command line as a user could paste it (quoted where needed).
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Run to completion; return stdout. On failure the error names the
    /// command line, the exit status and the last lines of stderr.
    pub fn run(&self) -> Result<String> {
        let out = self.output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run and return stdout and stderr together, failing as [`Cmd::run`].
    pub fn output(&self) -> Result<std::process::Output> {
        let out = self.output_unchecked()?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let source = if stderr.trim().is_empty() {
                stdout
            } else {
                stderr
            };
            bail!(
                "`{}` failed ({}):\n{}",
                self.display(),
                out.status,
                tail(&source, STDERR_TAIL)
            );
        }
        Ok(out)
    }

    /// Run and return its output whatever the exit status (for programs
    /// whose report is the result, e.g. validators); fails only when the
    /// program cannot run.
    pub fn output_unchecked(&self) -> Result<std::process::Output> {
        tracing::debug!(cmd = %self.display(), "running");
        let mut expr = duct::cmd(&self.program, &self.args)
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .before_spawn(|c| {
                crate::util::sys::die_with_parent(c);
                Ok(())
            });
        for (k, v) in &self.env {
            expr = expr.env(k, v);
        }
        if let Some(bytes) = &self.stdin {
            expr = expr.stdin_bytes(bytes.clone());
        } else {
            expr = expr.stdin_null();
        }
        if let Some(d) = &self.dir {
            expr = expr.dir(d);
        }
        match expr.run() {
            Ok(o) => Ok(o),
            Err(e) => bail!("cannot run `{}`: {e}", self.display()),
        }
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_command_and_stderr_tail() {
        let e = Cmd::new("sh")
            .args(["-c", "echo one >&2; echo two >&2; exit 3"])
            .run()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`sh -c 'echo one >&2; echo two >&2; exit 3'` failed"),
            "{e}"
        );
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(e.ends_with("one\ntwo"), "{e}");
    }

    #[test]
    fn missing_program_is_named() {
        let e = Cmd::new("/nonexistent/prog").run().unwrap_err().to_string();
        assert!(e.contains("cannot run `/nonexistent/prog`"), "{e}");
    }

    #[test]
    fn stdin_and_stdout() {
        let out = Cmd::new("cat").stdin(b"hello".to_vec()).run().unwrap();
        assert_eq!(out, "hello");
    }

    #[test]
    fn wrapped_commands_show_the_wrapper_first() {
        let c = Cmd::new("echo").arg("hi").under(&["env", "--"]);
        assert_eq!(c.display(), "env -- echo hi");
        assert_eq!(c.run().unwrap(), "hi\n");
    }

    #[test]
    fn tail_table() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
