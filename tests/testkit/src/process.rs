//! A child process whose output lines are captured for assertions.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What to run. The environment starts empty unless `inherit_env` is set,
/// so a developer's `EARSHOT_*` or `RUST_LOG` never leaks into a test.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub inherit_env: bool,
}

impl ProcessSpec {
    pub fn new(program: impl AsRef<Path>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            inherit_env: false,
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn envs<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    pub fn inherit_env(mut self, yes: bool) -> Self {
        self.inherit_env = yes;
        self
    }
}

#[derive(Default)]
struct Captured {
    stdout: Vec<String>,
    stderr: Vec<String>,
    stdout_done: bool,
    stderr_done: bool,
}

/// A running child. Dropping it kills the process (SIGKILL).
pub struct ChildProcess {
    name: String,
    child: Child,
    captured: Arc<Mutex<Captured>>,
    changed: watch::Sender<u64>,
    readers: Vec<JoinHandle<()>>,
}

fn echo_enabled() -> bool {
    std::env::var("EARSHOT_TEST_ECHO").is_ok_and(|v| !v.is_empty() && v != "0")
}

impl ChildProcess {
    /// Starts the process with piped stdout/stderr.
    pub fn spawn(spec: &ProcessSpec) -> anyhow::Result<Self> {
        let name = spec
            .program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.program.display().to_string());
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if !spec.inherit_env {
            cmd.env_clear();
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", spec.program.display()))?;
        let captured = Arc::new(Mutex::new(Captured::default()));
        let (changed, _) = watch::channel(0u64);
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let readers = vec![
            tokio::spawn(read_lines(
                stdout,
                captured.clone(),
                changed.clone(),
                false,
                format!("[{name} stdout]"),
            )),
            tokio::spawn(read_lines(
                stderr,
                captured.clone(),
                changed.clone(),
                true,
                format!("[{name} stderr]"),
            )),
        ];
        Ok(Self {
            name,
            child,
            captured,
            changed,
            readers,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The stdout lines so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.captured.lock().expect("lock").stdout.clone()
    }

    /// The stderr lines so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.captured.lock().expect("lock").stderr.clone()
    }

    /// Both streams, for error messages.
    pub fn output_text(&self) -> String {
        let c = self.captured.lock().expect("lock");
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            c.stdout.join("\n"),
            self.name,
            c.stderr.join("\n")
        )
    }

    /// Waits for the first stderr line (already seen or still to come) for
    /// which `pick` returns something. Fails if stderr closes first (the
    /// process exited), never on a clock.
    pub async fn wait_for_stderr<T>(
        &self,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let mut rx = self.changed.subscribe();
        let mut seen = 0;
        loop {
            {
                let c = self.captured.lock().expect("lock");
                for line in &c.stderr[seen..] {
                    if let Some(t) = pick(line) {
                        return Ok(t);
                    }
                }
                seen = c.stderr.len();
                if c.stderr_done {
                    drop(c);
                    bail!(
                        "{} closed stderr before the expected line\n{}",
                        self.name,
                        self.output_text()
                    );
                }
            }
            if rx.changed().await.is_err() {
                bail!("{}: output readers are gone", self.name);
            }
        }
    }

    /// Resolves when the process exits (its status), without consuming it.
    pub async fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        let status = self.child.wait().await?;
        self.finish_readers().await;
        Ok(status)
    }

    /// The exit status if the process has already exited.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    async fn finish_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.await;
        }
    }

    /// Sends a signal (e.g. `rustix::process::Signal::TERM`).
    pub fn signal(&self, sig: rustix::process::Signal) -> anyhow::Result<()> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow!("{} already exited", self.name))?;
        let pid =
            rustix::process::Pid::from_raw(pid as i32).ok_or_else(|| anyhow!("bad pid {pid}"))?;
        rustix::process::kill_process(pid, sig)
            .with_context(|| format!("signalling {} ({pid:?})", self.name))
    }

    /// SIGTERM, then waits for the exit and for all output to be read.
    pub async fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        if self.child.id().is_some() {
            self.signal(rustix::process::Signal::TERM)?;
        }
        self.wait().await
    }

    /// SIGKILL, then waits for the exit and for all output to be read.
    pub async fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        let _ = self.child.start_kill();
        self.wait().await
    }
}

async fn read_lines(
    stream: impl AsyncRead + Unpin,
    captured: Arc<Mutex<Captured>>,
    changed: watch::Sender<u64>,
    is_stderr: bool,
    prefix: String,
) {
    let echo = echo_enabled();
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Bytes, not `lines()`: one invalid UTF-8 byte must not end the capture.
        let n = reader.read_until(b'\n', &mut buf).await.unwrap_or(0);
        let mut c = captured.lock().expect("lock");
        if n == 0 {
            if is_stderr {
                c.stderr_done = true;
            } else {
                c.stdout_done = true;
            }
            drop(c);
            changed.send_modify(|v| *v += 1);
            return;
        }
        let line = String::from_utf8_lossy(buf.strip_suffix(b"\n").unwrap_or(&buf)).into_owned();
        if echo {
            eprintln!("{prefix} {line}");
        }
        if is_stderr {
            c.stderr.push(line);
        } else {
            c.stdout.push(line);
        }
        drop(c);
        changed.send_modify(|v| *v += 1);
    }
}
