//! Holding commits back while the files on disk are not yet durable.
//!
//! A restored database is served as soon as its files are written (reads come
//! from the page cache) while the file system is synced in the background. Until
//! that sync is done nothing may commit: a commit acknowledged then could name
//! restored files that a power cut takes back. So commits wait at this gate.
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::error::{Result, StorageError};

#[derive(Debug, Default)]
enum State {
    #[default]
    Open,
    Held,
    /// Making the files durable failed; commits are refused with this reason.
    Failed(String),
}

#[derive(Debug, Default)]
pub(crate) struct WriteGate {
    state: Mutex<State>,
    changed: Condvar,
}

impl WriteGate {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn hold(&self) {
        *self.state() = State::Held;
    }

    /// Opens the gate, or with `Err(reason)` refuses every later commit.
    pub(crate) fn release(&self, outcome: std::result::Result<(), String>) {
        *self.state() = match outcome {
            Ok(()) => State::Open,
            Err(reason) => State::Failed(reason),
        };
        self.changed.notify_all();
    }

    /// Blocks while the gate is held.
    pub(crate) fn wait(&self) -> Result<()> {
        let mut state = self.state();
        loop {
            match &*state {
                State::Open => return Ok(()),
                State::Failed(reason) => return Err(StorageError::NotDurable(reason.clone())),
                State::Held => state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }

    pub(crate) fn is_held(&self) -> bool {
        matches!(*self.state(), State::Held)
    }

    pub(crate) fn current(&self) -> WriteState {
        match &*self.state() {
            State::Open => WriteState::Open,
            State::Held => WriteState::Held,
            State::Failed(reason) => WriteState::Refused(reason.clone()),
        }
    }
}

/// Whether commits are accepted now, for health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteState {
    Open,
    /// Commits wait (a restored database is being made durable).
    Held,
    /// Commits are refused, for this reason.
    Refused(String),
}
