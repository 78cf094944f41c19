//! Power cuts: the real server on a file system that forgets, when the power goes,
//! whatever was not made durable ([`lossy_fs`]), cut at many random points of a
//! workload, powered on again and checked. Each test prints its seed;
//! `STRATA_POWERCUT_SEED=<seed>` repeats its cut points (as far as the
//! workload's own timing does), and `STRATA_POWERCUT_TRACE=1` prints every
//! change the file system sees (names, inodes, what each directory fsync made
//! durable) to find what a failing cut undid.
mod backups;
mod checkpoint;
mod disk;
mod lossy_fs;
mod model;
mod restores;
mod shipping;
mod writes;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::{Options, Server, Started, missing_tool};
use lossy_fs::{LossyFs, State};
use model::Model;

/// A disk whose power can be cut: a FUSE mount over a backing folder.
pub struct Disk {
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
    dirs: tempfile::TempDir,
    pub rng: StdRng,
    /// Power cuts so far.
    pub cuts: u32,
    /// The server's options: its log outside the disk, housekeeping eager so
    /// that merges and deletions meet the cuts too.
    pub opts: Options,
}

impl Disk {
    /// Mounts a new, empty disk; `None` (said loudly) where FUSE cannot be mounted.
    pub fn mount(test: &str) -> Option<Disk> {
        let seed = std::env::var("STRATA_POWERCUT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random::<u64>);
        eprintln!("{test}: power-cut seed {seed} (STRATA_POWERCUT_SEED={seed} repeats it)");
        let dirs = tempfile::Builder::new().prefix("strata-powercut-").tempdir().unwrap();
        for d in ["backing", "mnt", "outside"] {
            std::fs::create_dir(dirs.path().join(d)).unwrap();
        }
        let state = Arc::new(Mutex::new(State::new(&dirs.path().join("backing"))));
        let opts = Options {
            stderr_dir: Some(dirs.path().join("outside")),
            ..Options::default()
        }
        .conf("housekeeping.interval.ms", "20")
        .conf("housekeeping.merge.min.files", "2")
        .conf("housekeeping.orphan.grace.ms", "0");
        let mut disk = Disk {
            state,
            session: None,
            dirs,
            rng: StdRng::seed_from_u64(seed),
            cuts: 0,
            opts,
        };
        match disk.attach() {
            Ok(()) => Some(disk),
            Err(e) => {
                missing_tool(&format!(
                    "FUSE (mounting failed: {e}; needs /dev/fuse, and fuse3 when not root)"
                ));
                None
            }
        }
    }

    fn attach(&mut self) -> std::io::Result<()> {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("strata-powercut".into()),
            MountOption::DefaultPermissions,
            MountOption::RW,
        ];
        self.session = Some(fuser::spawn_mount(LossyFs(self.state.clone()), self.path(), &config)?);
        // The first request waits for the session to answer the kernel's INIT.
        std::fs::metadata(self.path())?;
        Ok(())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mount point.
    pub fn path(&self) -> PathBuf {
        self.dirs.path().join("mnt")
    }

    /// Makes everything durable, as `sync` after a machine's setup.
    pub fn sync_all(&self) {
        self.state().sync_all();
    }

    /// Changes (writes, syncs, renames...) since the disk was last powered on.
    pub fn changes(&self) -> u64 {
        self.state().changes
    }

    /// Cuts the power at a random one of the next `within` changes.
    pub fn arm_within(&mut self, within: u64) {
        let at = self.changes() + self.rng.random_range(1..=within.max(1));
        self.state().cut_at = Some(at);
    }

    pub fn is_cut(&self) -> bool {
        self.state().cut
    }

    /// Cuts the power now (the workload ended before the armed change).
    pub fn cut_now(&self) {
        self.state().cut = true;
    }

    /// Waits until the power is off.
    pub async fn until_cut(&self) {
        while !self.is_cut() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The power comes back (the server must be dead): unmounts, forgets what was
    /// not durable (every other cut tears files), mounts again.
    pub fn power_on(&mut self) {
        if let Some(session) = self.session.take() {
            session.umount_and_join().expect("unmounting the power-cut disk");
        }
        self.cuts += 1;
        let tearing = self.cuts.is_multiple_of(2);
        {
            let mut rng = StdRng::seed_from_u64(self.rng.random());
            let mut coin = move || rng.random_bool(0.5);
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.lose_unsynced(tearing.then_some(&mut coin as &mut dyn FnMut() -> bool));
        }
        self.attach().expect("mounting the power-cut disk again");
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.cut_now();
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

impl Disk {
    /// The server's root on this disk.
    pub fn root(&self) -> PathBuf {
        self.path().join("root")
    }

    /// Starts the server on [`Disk::root`] and makes its first files durable,
    /// as a machine set up before the power cuts begin.
    pub fn first_start(&self) -> Server {
        let server = self.start();
        self.sync_all();
        server
    }

    /// Starts the server, after a power cut too: it must come up without any repair.
    pub fn start(&self) -> Server {
        match Server::try_start(&self.root(), self.opts.clone()) {
            Started::Running(s) => s,
            Started::Exited { code, stderr } => {
                panic!(
                    "after power cut {} the server did not start ({code:?}): {stderr}",
                    self.cuts
                )
            }
        }
    }

    /// Runs up to `statements` statements of the model's workload on `server` with
    /// the power cut at a random one of the next `within` changes (or at the end,
    /// if the workload gets there first), kills the server and powers on again.
    pub async fn cut_during_workload(&mut self, server: Server, model: Model, within: u64, statements: usize) -> Model {
        self.arm_within(within);
        let rng = StdRng::seed_from_u64(self.rng.random());
        let workload = tokio::spawn(model.run(server.connect().await, rng, statements));
        tokio::select! {
            _ = self.until_cut() => {}
            _ = finished(&workload) => self.cut_now(),
        }
        server.kill9();
        let model = workload.await.expect("the workload");
        self.power_on();
        model
    }

    /// [`Disk::cut_during_workload`], then the server started again and the
    /// database checked against the model.
    pub async fn cut_and_restart(&mut self, server: Server, model: Model, within: u64, n: usize) -> (Server, Model) {
        let mut model = self.cut_during_workload(server, model, within, n).await;
        let server = self.start();
        model.check(&server.connect().await, self.cuts).await;
        (server, model)
    }

    /// Starts the server with the power cut at a random one of the next `within`
    /// changes (the start's own work: a rollback, a restore), or once it serves,
    /// kills it and powers on again.
    pub fn cut_during_start(&mut self, within: u64) {
        self.arm_within(within);
        match Server::try_start(&self.root(), self.opts.clone()) {
            Started::Running(server) => {
                self.cut_now();
                server.kill9();
            }
            Started::Exited { code, stderr } => {
                assert!(
                    self.is_cut(),
                    "the server failed to start ({code:?}) with the power on: {stderr}"
                );
            }
        }
        self.power_on();
    }

    /// Measures the changes `statements` statements of the workload make (no cut).
    pub async fn changes_of_workload(&mut self, server: &Server, model: Model, statements: usize) -> (Model, u64) {
        let before = self.changes();
        let rng = StdRng::seed_from_u64(self.rng.random());
        let model = model.run(server.connect().await, rng, statements).await;
        (model, self.changes() - before)
    }
}

async fn finished<T>(task: &tokio::task::JoinHandle<T>) {
    while !task.is_finished() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
