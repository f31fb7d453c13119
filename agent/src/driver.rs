//! The one loop every long-lived role runs (`kubelink run`, `kubelink agent`, `kubelink shoot`): it
//! decides *when* a pass runs; each role supplies only *what* a pass does ([`Role`]).
//!
//! A pass runs on a wake-up (netlink monitor, watch events; many coalesce into one), on the resync
//! timer, after a reload (SIGHUP, or a changed input seen by the poll), and when the role's own timer
//! says so. After a failed pass the loop backs off: wake-ups and resyncs start no pass until the
//! back-off ends (a failing pass makes netlink events of its own, which must not become a busy loop);
//! the back-off doubles with every failure and resets after a pass that succeeds. SIGTERM or SIGINT
//! ends the loop; what a role does on exit is its own.

use std::fmt::Display;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// What an operating-system signal asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM, SIGINT: leave the loop.
    Exit,
    /// SIGHUP: re-read the inputs and pass at once.
    Reload,
}

/// Whether something a role did makes a pass due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Pass,
    Nothing,
}

/// What a role does; [`run`] decides when. The futures run on the caller's task, one at a time.
#[allow(async_fn_in_trait, reason = "the driver awaits on its own task; no Send bound is needed")]
pub trait Role {
    type Error: Display;

    /// Brings what the role owns to the desired state.
    async fn pass(&mut self) -> Result<(), Self::Error>;

    /// Says that a pass failed and when the next one runs (each role in its own words).
    fn failed(&mut self, error: &Self::Error, retry_in: Duration);

    /// The resync timer fired: by default a full pass.
    async fn resync(&mut self) -> Due {
        Due::Pass
    }

    /// SIGHUP: re-read the inputs (a pass follows either way).
    fn reload(&mut self) {}

    /// The poll timer fired: whether the inputs changed (then they are taken and a pass follows).
    fn poll(&mut self) -> bool {
        false
    }

    /// The role's own timer fired (the agent's election round, the sidecar's probes).
    async fn tick(&mut self) -> Due {
        Due::Nothing
    }
}

/// How long the loop waits after a failed pass: `initial`, doubled per failure up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_millis(100), max: Duration::from_secs(5) }
    }
}

/// The timers of one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// A pass this often (WireGuard peer changes raise no netlink event).
    pub resync: Duration,
    /// [`Role::poll`] this often; `None`: never.
    pub poll: Option<Duration>,
    /// [`Role::tick`] this often, first at once; `None`: never.
    pub tick: Option<Duration>,
    pub backoff: Backoff,
    /// Whether the loop starts with a pass (the agent starts with its election round instead).
    pub pass_at_start: bool,
}

impl Schedule {
    /// A pass at start and every `resync`, the default back-off, no poll and no own timer.
    pub fn resync_every(resync: Duration) -> Self {
        Self { resync, poll: None, tick: None, backoff: Backoff::default(), pass_at_start: true }
    }
}

/// The back-off's state: pure, the loop passes the time in.
#[derive(Debug, Clone)]
struct Holdoff {
    backoff: Backoff,
    /// The last wait and when it ends; `None` after a pass that succeeded.
    current: Option<(Duration, Instant)>,
}

impl Holdoff {
    fn new(backoff: Backoff) -> Self {
        Self { backoff, current: None }
    }

    /// Records a failed pass at `now`; returns how long the loop now waits.
    fn failed(&mut self, now: Instant) -> Duration {
        let wait = match self.current {
            Some((last, _)) => last.saturating_mul(2).min(self.backoff.max),
            None => self.backoff.initial.min(self.backoff.max),
        };
        self.current = Some((wait, now + wait));
        wait
    }

    fn succeeded(&mut self) {
        self.current = None;
    }

    /// When the back-off ends, while there is one.
    fn until(&self) -> Option<Instant> {
        self.current.map(|(_, until)| until)
    }
}

/// What woke the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Reload,
    Tick,
    BackoffOver,
    Wake,
    Resync,
    Poll,
}

/// Runs `role` until [`Signal::Exit`] arrives (or the signal source closes).
pub async fn run<R: Role>(role: &mut R, schedule: Schedule, wake: &Notify, signals: &mut mpsc::Receiver<Signal>) {
    let mut resync = timer(schedule.resync);
    resync.reset(); // the first resync one period after the start, not at once
    let mut poll = schedule.poll.map(timer);
    let mut tick = schedule.tick.map(timer);
    let mut holdoff = Holdoff::new(schedule.backoff);
    if schedule.pass_at_start {
        pass(role, &mut holdoff, wake).await;
        resync.reset();
    }
    loop {
        let until = holdoff.until();
        // A signal wins over timers that are always ready (a round of probes to a dead gateway
        // outlasts its interval); among the rest the pick is random, so that none starves another.
        let event = tokio::select! {
            biased;
            signal = signals.recv() => match signal {
                Some(Signal::Reload) => Event::Reload,
                Some(Signal::Exit) | None => break,
            },
            event = async {
                tokio::select! {
                    _ = next(&mut tick) => Event::Tick,
                    _ = tokio::time::sleep_until(until.unwrap_or_else(Instant::now)), if until.is_some() => Event::BackoffOver,
                    _ = wake.notified(), if until.is_none() => Event::Wake,
                    _ = resync.tick(), if until.is_none() => Event::Resync,
                    _ = next(&mut poll) => Event::Poll,
                }
            } => event,
        };
        if handle(role, event).await == Due::Pass {
            pass(role, &mut holdoff, wake).await;
            // A resync is due one period after the last pass, whatever started it.
            resync.reset();
        }
    }
}

/// What the role makes of `event`: whether a pass is due.
async fn handle<R: Role>(role: &mut R, event: Event) -> Due {
    match event {
        Event::Reload => {
            role.reload();
            Due::Pass
        }
        Event::Tick => role.tick().await,
        Event::BackoffOver | Event::Wake => Due::Pass,
        Event::Resync => role.resync().await,
        Event::Poll if role.poll() => Due::Pass,
        Event::Poll => Due::Nothing,
    }
}

/// One pass. A wake-up that came before it is taken first: the pass reads the state afresh, and one
/// that comes during it wakes the next.
async fn pass<R: Role>(role: &mut R, holdoff: &mut Holdoff, wake: &Notify) {
    _ = futures::FutureExt::now_or_never(wake.notified());
    match role.pass().await {
        Ok(()) => holdoff.succeeded(),
        Err(e) => {
            let wait = holdoff.failed(Instant::now());
            role.failed(&e, wait);
        }
    }
}

/// An interval whose missed ticks do not queue up into back-to-back work.
fn timer(period: Duration) -> Interval {
    let mut interval = tokio::time::interval(period.max(Duration::from_millis(1)));
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

/// The next tick of an optional timer; never, without one.
async fn next(timer: &mut Option<Interval>) {
    match timer {
        Some(t) => _ = t.tick().await,
        None => std::future::pending().await,
    }
}

/// SIGTERM and SIGINT as [`Signal::Exit`], SIGHUP as [`Signal::Reload`].
pub fn os_signals() -> std::io::Result<mpsc::Receiver<Signal>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let s = tokio::select! {
                _ = term.recv() => Signal::Exit,
                _ = int.recv() => Signal::Exit,
                _ = hup.recv() => Signal::Reload,
            };
            if tx.send(s).await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests;
