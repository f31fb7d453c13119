//! The loop under tokio's paused clock: every test is exact about when passes run, and takes no real
//! time.

use std::collections::VecDeque;
use std::sync::Arc;

use super::*;

const MS: Duration = Duration::from_millis(1);
/// Longer than any test runs: a timer that never fires.
const NEVER: Duration = Duration::from_secs(3600);

/// A role that records when each call came, relative to the start, and fails the passes it is told to.
#[derive(Default)]
struct Recorder {
    start: Option<Instant>,
    passes: Vec<Duration>,
    /// Results of the next passes, in order; empty: success.
    results: VecDeque<bool>,
    failures: Vec<Duration>,
    reloads: usize,
    ticks: usize,
    resyncs: usize,
    tick_due: Option<Due>,
    /// How long the role's own timer's work takes.
    tick_takes: Duration,
    resync_due: Option<Due>,
    /// What the next polls answer; empty: unchanged.
    polls: VecDeque<bool>,
}

impl Recorder {
    fn at(&self) -> Duration {
        Instant::now() - self.start.unwrap_or_else(Instant::now)
    }
}

impl Role for Recorder {
    type Error = String;

    async fn pass(&mut self) -> Result<(), String> {
        self.passes.push(self.at());
        if self.results.pop_front().unwrap_or(true) { Ok(()) } else { Err("it broke".into()) }
    }

    fn failed(&mut self, _error: &String, retry_in: Duration) {
        self.failures.push(retry_in);
    }

    async fn resync(&mut self) -> Due {
        self.resyncs += 1;
        self.resync_due.unwrap_or(Due::Pass)
    }

    fn reload(&mut self) {
        self.reloads += 1;
    }

    fn poll(&mut self) -> bool {
        self.polls.pop_front().unwrap_or(false)
    }

    async fn tick(&mut self) -> Due {
        self.ticks += 1;
        tokio::time::sleep(self.tick_takes).await;
        self.tick_due.unwrap_or(Due::Nothing)
    }
}

struct Running {
    wake: Arc<Notify>,
    signals: mpsc::Sender<Signal>,
    task: tokio::task::JoinHandle<Recorder>,
}

fn start(mut role: Recorder, schedule: Schedule) -> Running {
    let wake = Arc::new(Notify::new());
    let (signals, mut rx) = mpsc::channel(4);
    let w = wake.clone();
    role.start = Some(Instant::now());
    let task = tokio::spawn(async move {
        run(&mut role, schedule, &w, &mut rx).await;
        role
    });
    Running { wake, signals, task }
}

impl Running {
    async fn stop(self) -> Recorder {
        self.signals.send(Signal::Exit).await.unwrap();
        self.task.await.unwrap()
    }
}

fn quiet() -> Schedule {
    Schedule::resync_every(NEVER)
}

fn ms(list: &[u64]) -> Vec<Duration> {
    list.iter().map(|n| Duration::from_millis(*n)).collect()
}

#[test]
fn the_backoff_doubles_up_to_its_maximum_and_resets_after_a_success() {
    let mut h = Holdoff::new(Backoff { initial: 100 * MS, max: 500 * MS });
    let t = Instant::now();
    let waits: Vec<Duration> = (0..5).map(|_| h.failed(t)).collect();
    assert_eq!(waits, ms(&[100, 200, 400, 500, 500]));
    assert_eq!(h.until(), Some(t + 500 * MS));
    h.succeeded();
    assert_eq!(h.until(), None, "a success ends the back-off");
    assert_eq!(h.failed(t), 100 * MS, "and the next failure starts over");
}

#[tokio::test(start_paused = true)]
async fn after_a_failed_pass_wake_ups_wait_for_the_backoff_which_grows_and_resets() {
    let role = Recorder { results: [false, false, false, true, false].into(), ..Recorder::default() };
    let running = start(role, quiet());
    // A failing pass that makes netlink events of its own: a wake-up every 30 ms from 5 ms on.
    tokio::time::sleep(5 * MS).await;
    for _ in 0..34 {
        running.wake.notify_one();
        tokio::time::sleep(30 * MS).await;
    }
    let role = running.stop().await;
    // Start: fails (wait 100), fails (wait 200), fails (wait 400), succeeds at 700; the wake-up at 725
    // passes at once and fails, the back-off starts over at 100 and the pass at 825 succeeds.
    assert_eq!(role.failures, ms(&[100, 200, 400, 100]));
    assert_eq!(role.passes[..6], ms(&[0, 100, 300, 700, 725, 825]));
    assert_eq!(role.passes[6..], ms(&[845, 875, 905, 935, 965, 995]), "then one pass per wake-up");
}

#[tokio::test(start_paused = true)]
async fn wake_ups_during_a_pass_coalesce_into_one_pass() {
    let running = start(Recorder::default(), quiet());
    tokio::time::sleep(MS).await;
    for _ in 0..50 {
        running.wake.notify_one();
    }
    tokio::time::sleep(100 * MS).await;
    let role = running.stop().await;
    assert_eq!(role.passes, ms(&[0, 1]), "the start pass and one for fifty wake-ups");
}

#[tokio::test(start_paused = true)]
async fn the_resync_timer_passes_every_period_and_can_leave_the_pass_to_the_role() {
    let running = start(Recorder::default(), Schedule::resync_every(500 * MS));
    tokio::time::sleep(2100 * MS).await;
    let role = running.stop().await;
    assert_eq!(role.passes, ms(&[0, 500, 1000, 1500, 2000]));
    assert_eq!(role.resyncs, 4);

    let light = Recorder { resync_due: Some(Due::Nothing), ..Recorder::default() };
    let running = start(light, Schedule::resync_every(500 * MS));
    tokio::time::sleep(2100 * MS).await;
    let role = running.stop().await;
    assert_eq!((role.passes.len(), role.resyncs), (1, 4), "the role resyncs by itself");
}

#[tokio::test(start_paused = true)]
async fn a_failed_pass_holds_the_resync_back_too() {
    let role = Recorder { results: [false, false].into(), ..Recorder::default() };
    let running = start(role, Schedule::resync_every(50 * MS));
    tokio::time::sleep(600 * MS).await;
    let role = running.stop().await;
    // Fail at 0 (wait 100), fail at 100 (wait 200), then a pass at 300 and resyncs every 50 ms.
    assert_eq!(role.passes[..4], ms(&[0, 100, 300, 350]));
}

#[tokio::test(start_paused = true)]
async fn a_reload_passes_at_once_even_during_a_backoff() {
    let backoff = Backoff { initial: Duration::from_secs(10), max: Duration::from_secs(10) };
    let role = Recorder { results: [false].into(), ..Recorder::default() };
    let running = start(role, Schedule { backoff, ..quiet() });
    tokio::time::sleep(20 * MS).await;
    running.signals.send(Signal::Reload).await.unwrap();
    tokio::time::sleep(20 * MS).await;
    let role = running.stop().await;
    assert_eq!(role.reloads, 1);
    assert_eq!(role.passes, ms(&[0, 20]));
}

#[tokio::test(start_paused = true)]
async fn the_poll_passes_only_when_the_inputs_changed() {
    let role = Recorder { polls: [false, true, false].into(), ..Recorder::default() };
    let running = start(role, Schedule { poll: Some(Duration::from_secs(1)), ..quiet() });
    tokio::time::sleep(3500 * MS).await;
    let role = running.stop().await;
    // Polls at 0, 1000, 2000, 3000: only the one at 1000 saw a change.
    assert_eq!(role.passes, ms(&[0, 1000]));
    assert_eq!(role.reloads, 0, "a poll is not a SIGHUP");
}

#[tokio::test(start_paused = true)]
async fn the_roles_own_timer_may_pass_during_a_backoff() {
    let backoff = Backoff { initial: Duration::from_secs(10), max: Duration::from_secs(10) };
    let role = Recorder { results: [false, false, false].into(), tick_due: Some(Due::Pass), ..Recorder::default() };
    let schedule = Schedule { tick: Some(Duration::from_secs(1)), backoff, pass_at_start: false, ..quiet() };
    let running = start(role, schedule);
    tokio::time::sleep(2500 * MS).await;
    running.wake.notify_one();
    tokio::time::sleep(10 * MS).await;
    let role = running.stop().await;
    // No pass before the first tick; ticks at 0, 1000, 2000 pass although the back-off runs.
    assert_eq!(role.ticks, 3);
    assert_eq!(role.passes, ms(&[0, 1000, 2000]));
    assert_eq!(role.failures.len(), 3, "and the wake-up at 2500 waits for the back-off");
}

#[tokio::test(start_paused = true)]
async fn an_own_timer_that_is_always_due_starves_neither_resyncs_nor_signals() {
    // Probes to a dead gateway: each round takes longer than the probe interval.
    let role = Recorder { tick_takes: 1100 * MS, ..Recorder::default() };
    let schedule = Schedule { tick: Some(Duration::from_secs(1)), ..Schedule::resync_every(500 * MS) };
    let running = start(role, schedule);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let role = running.stop().await;
    assert!(role.ticks >= 5, "the timer ran: {}", role.ticks);
    assert!(role.passes.len() >= 5, "and so did the resyncs: {} passes, {} ticks", role.passes.len(), role.ticks);
}

#[tokio::test(start_paused = true)]
async fn exit_ends_the_loop_at_once_and_so_does_a_closed_signal_source() {
    let running = start(Recorder::default(), Schedule::resync_every(MS));
    tokio::time::sleep(10 * MS).await;
    let stopped = Instant::now();
    let role = running.stop().await;
    assert_eq!(Instant::now(), stopped, "no pass after the signal");
    assert!(role.passes.len() >= 10, "resyncs every millisecond ran: {}", role.passes.len());

    let running = start(Recorder::default(), quiet());
    drop(running.signals);
    let role = tokio::time::timeout(Duration::from_secs(1), running.task).await.expect("the loop ended").unwrap();
    assert_eq!(role.passes.len(), 1);
}
