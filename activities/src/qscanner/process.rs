//! Running the QScanner process: bounded output capture, heartbeats, timeout and cancellation.

use super::command::CommandSpec;
use super::error::QScannerError;
use super::job::{Progress, ScanStage};
use std::future::Future;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::warn;

/// At most this many bytes of each of stdout and stderr are kept (the last ones).
pub const CAPTURE_LIMIT: usize = 64 * 1024;

/// How long to wait for the output pipes to close once the process is gone (a grandchild may
/// hold them open).
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// How the process ended.
pub(crate) enum Ended {
    /// It exited (or was killed by someone else).
    Exited(ExitStatus),
    /// The timeout passed; it was killed.
    TimedOut,
    /// The cancel future resolved; it was killed.
    Cancelled,
}

/// A finished process: how it ended and the tails of its output (not yet redacted).
pub(crate) struct Finished {
    pub(crate) ended: Ended,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) elapsed: Duration,
}

/// Keeps the last [`CAPTURE_LIMIT`] bytes of a stream.
async fn capture(mut stream: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > 2 * CAPTURE_LIMIT {
                    kept.drain(..kept.len() - CAPTURE_LIMIT);
                }
            }
        }
    }
    if kept.len() > CAPTURE_LIMIT {
        kept.drain(..kept.len() - CAPTURE_LIMIT);
    }
    kept
}

async fn collect(task: Option<JoinHandle<Vec<u8>>>) -> String {
    let Some(mut task) = task else {
        return String::new();
    };
    match tokio::time::timeout(PIPE_GRACE, &mut task).await {
        Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(Err(_)) => String::new(),
        Err(_) => {
            task.abort();
            String::new()
        }
    }
}

/// Sends SIGKILL to the process group `pgid` with the `kill(2)` system call, through `rustix`
/// (qflows forbids `unsafe`; rustix wraps the call safely, and the distroless image has no
/// `kill(1)` to shell out to). ESRCH (the group is already gone) is fine.
fn kill_group(pgid: u32) {
    let Some(pid) = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    match rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::SRCH => {}
        Err(e) => warn!(pgid, error = %e, "killing the qscanner process group failed"),
    }
}

/// Kills QScanner's process group when dropped, so nothing QScanner started outlives the run
/// on any path: a timeout, a cancellation, a dropped future, or a QScanner that exited and left
/// children behind (they would be orphans of the worker, which may be PID 1).
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            kill_group(pgid);
        }
    }
}

/// Kills the process and its process group, then reaps it. The child leads its own process
/// group (`process_group(0)`): the group id is its pid, which cannot be reused before the child
/// is reaped below.
async fn kill(child: &mut Child) {
    if let Some(pid) = child.id() {
        kill_group(pid);
    }
    if let Err(e) = child.kill().await {
        warn!(error = %e, "killing qscanner failed");
    }
}

/// Spawns the command and waits for it, heartbeating every `heartbeat_every`, killing it when
/// `timeout` passes or `cancel` resolves.
pub(crate) async fn run(
    spec: &CommandSpec,
    timeout: Duration,
    heartbeat_every: Duration,
    scan_id: &str,
    heartbeat: &mut (impl FnMut(Progress) + Send),
    cancel: impl Future<Output = ()> + Send,
) -> Result<Finished, QScannerError> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(n, v)| (n.as_str(), v.expose())))
        .current_dir(&spec.current_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            QScannerError::NotFound {
                path: spec.program.clone(),
                message: format!("cannot start it: {e}"),
            }
        }
        _ => QScannerError::io("spawning qscanner", &e),
    })?;
    let _group = GroupGuard(child.id());
    let stdout = child.stdout.take().map(|s| tokio::spawn(capture(s)));
    let stderr = child.stderr.take().map(|s| tokio::spawn(capture(s)));
    let progress = |stage| Progress {
        scan_id: scan_id.to_string(),
        elapsed: started.elapsed(),
        stage,
    };
    heartbeat(progress(ScanStage::Started));

    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    tokio::pin!(cancel);
    let mut ticker = tokio::time::interval_at(started + heartbeat_every, heartbeat_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        tokio::select! {
            biased;
            () = &mut cancel => {
                kill(&mut child).await;
                break Ended::Cancelled;
            }
            () = &mut deadline => {
                kill(&mut child).await;
                break Ended::TimedOut;
            }
            status = child.wait() => {
                match status {
                    Ok(status) => break Ended::Exited(status),
                    Err(e) => {
                        kill(&mut child).await;
                        return Err(QScannerError::io("waiting for qscanner", &e));
                    }
                }
            }
            _ = ticker.tick() => heartbeat(progress(ScanStage::Scanning)),
        }
    };
    let elapsed = started.elapsed();
    let stdout = collect(stdout).await;
    let stderr = collect(stderr).await;
    Ok(Finished {
        ended,
        stdout,
        stderr,
        elapsed,
    })
}
