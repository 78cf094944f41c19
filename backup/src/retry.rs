//! Bounded retries of store operations that failed for a reason that may pass
//! (a dropped connection, a 5xx, a timeout), with doubling backoff. Errors that
//! will not pass by waiting (not found, denied, bad request, corrupt data) are
//! returned at once. The S3 client retries requests itself as well; this also
//! covers streamed bodies, local stores and errors surfacing mid-stream.
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{BackupError, Result};

/// Tries per operation before its error counts.
pub(crate) const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// True when waiting and trying again may succeed.
pub(crate) fn is_transient(e: &BackupError) -> bool {
    use object_store::Error as E;
    match e {
        BackupError::Store { source, .. } => !matches!(
            source,
            E::NotFound { .. }
                | E::AlreadyExists { .. }
                | E::Precondition { .. }
                | E::NotModified { .. }
                | E::NotSupported { .. }
                | E::PermissionDenied { .. }
                | E::Unauthenticated { .. }
                | E::InvalidPath { .. }
                | E::UnknownConfigurationKey { .. }
        ),
        _ => false,
    }
}

/// Runs `op` until it succeeds, fails permanently, or [`ATTEMPTS`] tries are
/// used; each try after the first is counted in `retries`.
pub(crate) async fn with_retry<T, F, Fut>(what: &str, retries: &AtomicU64, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                tracing::warn!("{what}: attempt {attempt} of {ATTEMPTS} failed, retrying in {backoff:?}: {e}");
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    fn generic() -> BackupError {
        BackupError::Store {
            context: "test".into(),
            source: object_store::Error::Generic {
                store: "test",
                source: "connection reset".into(),
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_a_bounded_number_of_times() {
        let calls = AtomicU32::new(0);
        let retries = AtomicU64::new(0);
        let ok = with_retry("op", &retries, || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(generic())
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(ok.ok(), Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(retries.load(Ordering::SeqCst), 2);

        calls.store(0, Ordering::SeqCst);
        let failed: Result<()> = with_retry("op", &retries, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(generic())
        })
        .await;
        assert!(failed.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);

        calls.store(0, Ordering::SeqCst);
        let not_found: Result<()> = with_retry("op", &retries, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(BackupError::Store {
                context: "test".into(),
                source: object_store::Error::NotFound {
                    path: "x".into(),
                    source: "gone".into(),
                },
            })
        })
        .await;
        assert!(not_found.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "permanent errors are not retried");
    }
}
