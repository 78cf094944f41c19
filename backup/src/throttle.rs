//! Upload pacing for `backup.max.bandwidth.mb`, and the cap on concurrent compressions.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

/// Limits what the backup may use of the machine, shared by all its uploads.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes per second for uploads; `None` = unlimited.
    bandwidth: Option<u64>,
    /// When the next upload may start (pacing keeps the average under `bandwidth`).
    next_start: Arc<Mutex<Instant>>,
    compressions: Arc<Semaphore>,
}

impl Limits {
    pub fn new(bandwidth_bytes_per_sec: Option<u64>, compression_threads: usize) -> Self {
        Self {
            bandwidth: bandwidth_bytes_per_sec.filter(|b| *b > 0),
            next_start: Arc::new(Mutex::new(Instant::now())),
            compressions: Arc::new(Semaphore::new(compression_threads.max(1))),
        }
    }

    /// Waits until `bytes` may be sent without exceeding the bandwidth on average.
    pub async fn pace(&self, bytes: u64) {
        let Some(rate) = self.bandwidth else { return };
        let start = {
            let mut next = self.next_start.lock().await;
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
            start
        };
        tokio::time::sleep_until(start).await;
    }

    /// A permit to run one compression.
    pub async fn compression_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.compressions
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pacing_spreads_uploads_at_the_rate() {
        let l = Limits::new(Some(1000), 1);
        let t0 = Instant::now();
        l.pace(1000).await; // starts at once
        l.pace(1000).await; // waits one second
        l.pace(500).await; // waits another second
        assert_eq!(Instant::now() - t0, Duration::from_secs(2));
        let unlimited = Limits::new(None, 1);
        let t1 = Instant::now();
        unlimited.pace(1 << 30).await;
        assert_eq!(Instant::now(), t1);
    }
}
