//! The runtime backups run on: threads of their own at a lower OS priority
//! (nice), so queries and inserts get the CPU when they want it and a backup
//! uses what is left. Everything a backup does — reading and hashing files,
//! the local store's writes (object_store runs them on the calling runtime's
//! blocking threads) — happens on these threads.
use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime};

/// How much lower than the server's threads background threads run.
const NICENESS: i32 = 10;
/// The lowest priority there is.
const MAX_NICE: i32 = 19;

/// The background runtime, built on first use and kept for the life of the
/// process (a runtime cannot be dropped from async code); `None` when it could
/// not be built, and backups then run on the caller's runtime.
fn handle() -> Option<&'static Handle> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            // Threads inherit the nice value of the thread that starts them, so the
            // target is fixed once, from the server thread that builds the runtime.
            let target = (own_priority() + NICENESS).min(MAX_NICE);
            let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("strata-background")
                .on_thread_start(move || set_priority(target))
                .enable_all()
                .build()
                .inspect_err(|e| tracing::warn!("no background runtime, backups share the server's: {e}"))
                .ok()
        })
        .as_ref()
        .map(Runtime::handle)
}

/// The calling thread's nice value.
fn own_priority() -> i32 {
    // SAFETY: getpriority only reads its integer arguments; `who` = 0 is the calling thread.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

/// Sets the calling thread's nice value: on Linux it belongs to the thread, not
/// to the whole process.
fn set_priority(nice: i32) {
    // SAFETY: setpriority only reads its integer arguments; `who` = 0 is the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!("background thread keeps normal priority: {e}");
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

#[cfg(test)]
mod tests {
    /// The nice value of the calling thread (field 19 of /proc/thread-self/stat).
    fn own_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("procfs");
        let after_name = &stat[stat.rfind(')').expect("stat has a name") + 2..];
        after_name
            .split(' ')
            .nth(16)
            .and_then(|v| v.parse().ok())
            .expect("nice field")
    }

    #[tokio::test]
    async fn background_work_runs_at_a_lower_priority_than_the_caller() {
        let caller = own_nice();
        let (on_worker, on_blocking) = super::spawn(async {
            let blocking = tokio::task::spawn_blocking(own_nice).await.expect("blocking task");
            (own_nice(), blocking)
        })
        .await
        .expect("background task");
        let lower = (caller + super::NICENESS).min(super::MAX_NICE);
        assert_eq!(on_worker, lower);
        assert_eq!(on_blocking, lower, "object_store's file writes run here");
    }
}
