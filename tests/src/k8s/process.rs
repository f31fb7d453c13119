//! Child processes of a cluster (etcd, kube-apiserver) that die with the test process.
//!
//! A cluster shared by the tests of one binary lives in a `static` and is never dropped, so its
//! processes are started with `PR_SET_PDEATHSIG`: the kernel kills them when their parent exits. The
//! "parent" of that rule is the thread that forked, and libtest ends each test's thread, so every
//! child is forked by one keeper thread that lives as long as the process.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type Request = (Command, mpsc::Sender<std::io::Result<Child>>);

fn keeper() -> &'static Mutex<mpsc::Sender<Request>> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("k8s-keeper".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
                // The channel is in a static and never closes; park so that the children keep a parent.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawning the process keeper thread");
        Mutex::new(tx)
    })
}

/// A running etcd or kube-apiserver; killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `program args` with its output in `log`, in the network namespace `netns` (a path under
    /// `/run/netns`) when given. The process dies with the test process.
    pub fn start(program: &Path, args: &[String], netns: Option<&Path>, log: &Path) -> Result<Self, String> {
        let out = File::options().create(true).append(true).open(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let ns: Option<OwnedFd> = match netns {
            Some(p) => Some(File::open(p).map_err(|e| format!("{}: {e}", p.display()))?.into()),
            None => None,
        };
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        let ns_fd = ns.as_ref().map(|f| f.as_raw_fd());
        // SAFETY: only async-signal-safe calls (prctl, setns) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = ns_fd
                    && libc::setns(fd, libc::CLONE_NEWNET) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (tx, rx) = mpsc::channel();
        keeper().lock().unwrap_or_else(|e| e.into_inner()).send((command, tx)).map_err(|e| e.to_string())?;
        let child =
            rx.recv().map_err(|e| e.to_string())?.map_err(|e| format!("starting {}: {e}", program.display()))?;
        drop(ns);
        Ok(Self { child: Some(child), log: log.to_path_buf() })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Sends `signal` (SIGSTOP and SIGCONT freeze and thaw it).
    pub fn signal(&self, signal: i32) {
        if self.pid() > 0 {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(self.pid(), signal) };
        }
    }

    /// Whether it still runs; its exit status when it has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: kill(2) on our own child; SIGCONT first, in case it was frozen.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGCONT);
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The last `lines` lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
