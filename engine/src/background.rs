//! The runtime backups run on: threads of their own in the kernel's idle
//! scheduling class (`SCHED_IDLE`), so queries and inserts get the CPU whenever
//! they want it and preempt a backup at once, and a backup uses what is left.
//! Their disk requests stay best-effort: the idle I/O class the kernel would
//! derive from `SCHED_IDLE` makes a commit's fsync wait behind the backup's
//! starved writes (ext4 flushes them in the same journal commit), which doubled
//! insert latency during a backup in the benchmark. Everything a backup does — reading and hashing files, the local store's
//! writes (object_store runs them on the calling runtime's blocking threads) —
//! happens on these threads.
use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime};
use tokio_util::sync::CancellationToken;

/// The background runtime, built on first use and kept for the life of the
/// process (a runtime cannot be dropped from async code); `None` when it could
/// not be built, and backups then run on the caller's runtime.
fn handle() -> Option<&'static Handle> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("strata-background")
                .on_thread_start(run_when_idle)
                .enable_all()
                .build()
                .inspect_err(|e| tracing::warn!("no background runtime, backups share the server's: {e}"))
                .ok()
        })
        .as_ref()
        .map(Runtime::handle)
}

/// `ioprio_set`'s "which": one thread (or process) by id, 0 = the caller.
const IOPRIO_WHO_PROCESS: libc::c_long = 1;
/// The best-effort I/O class at its lowest level (7), as `ioprio_set` encodes it.
const IOPRIO_BEST_EFFORT_LOWEST: libc::c_long = (2 << 13) | 7;

/// Moves the calling thread to `SCHED_IDLE` with best-effort I/O (on Linux both
/// belong to the thread, and any thread may lower its own).
fn run_when_idle() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler only reads `param` during the call; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!("background thread keeps the normal scheduling class: {e}");
    }
    // SAFETY: ioprio_set only reads its integer arguments.
    if unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, IOPRIO_BEST_EFFORT_LOWEST) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!("background thread keeps the idle I/O class: {e}");
    }
}

/// Runs `work` on the background runtime.
pub(crate) fn spawn<F>(work: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match handle() {
        Some(h) => h.spawn(work),
        None => tokio::spawn(work),
    }
}

/// The shape of every periodic task (housekeeping, the checkpoint watchdog,
/// scheduled backups): wait until the next tick, or stop as soon as `cancel`
/// fires, then run the tick to its end. `wait` says how long until the next
/// tick; `None` ends the task.
pub(crate) async fn periodic<W, F, Fut>(cancel: &CancellationToken, mut wait: W, mut tick: F)
where
    W: FnMut() -> Option<std::time::Duration>,
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    while let Some(wait) = wait() {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        tick().await;
    }
}

#[cfg(test)]
mod tests {
    /// The scheduling policy and I/O priority of the calling thread.
    fn own_priority() -> (i32, libc::c_long) {
        // SAFETY: both only read their integer arguments; 0 is the calling thread.
        unsafe {
            (
                libc::sched_getscheduler(0),
                libc::syscall(libc::SYS_ioprio_get, super::IOPRIO_WHO_PROCESS, 0),
            )
        }
    }

    #[tokio::test]
    async fn background_work_runs_in_the_idle_scheduling_class_with_best_effort_io() {
        assert_ne!(own_priority().0, libc::SCHED_IDLE, "the caller keeps its class");
        let (on_worker, on_blocking) = super::spawn(async {
            let blocking = tokio::task::spawn_blocking(own_priority).await.expect("blocking task");
            (own_priority(), blocking)
        })
        .await
        .expect("background task");
        let expected = (libc::SCHED_IDLE, super::IOPRIO_BEST_EFFORT_LOWEST);
        assert_eq!(on_worker, expected);
        assert_eq!(on_blocking, expected, "object_store's file writes run here");
    }
}
