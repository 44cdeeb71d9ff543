//! Group commit for `fsync`: concurrent syncs of one file or directory share
//! one system call.
//!
//! A sync asked for while another of the same inode runs waits for that one
//! to end and then for the next, which one of the waiters runs for all of
//! them. A sync that serves a request always starts after the request was
//! made, so sharing never weakens what the caller gets: everything it wrote
//! before asking is on disk when its sync returns. A hundred transactions
//! delivering into one maildir fsync its `new/` directory a few times
//! instead of a hundred.

use crate::telemetry::{FSYNC_REQUESTS, FSYNCS};
use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Shares concurrent syncs of each inode; one per server.
#[derive(Default)]
pub struct GroupSync {
    inodes: Mutex<HashMap<(u64, u64), Arc<Inode>>>,
}

/// The rounds of syncs of one inode.
#[derive(Default)]
struct Inode {
    rounds: Mutex<Rounds>,
    finished: watch::Sender<Finished>,
}

#[derive(Default)]
struct Rounds {
    /// The number of the last round started.
    started: u64,
    running: bool,
}

/// The last round that finished and how.
#[derive(Clone, Default)]
struct Finished {
    round: u64,
    error: Option<(io::ErrorKind, Option<i32>)>,
}

impl Finished {
    fn result(&self) -> io::Result<()> {
        match self.error {
            None => Ok(()),
            Some((_, Some(code))) => Err(io::Error::from_raw_os_error(code)),
            Some((kind, None)) => Err(io::Error::new(kind, "fsync failed")),
        }
    }
}

impl GroupSync {
    /// Makes `file` (a file or a directory) durable: runs `fsync(file)` as
    /// this request's round, or waits for a round that starts after this
    /// call and is run by another caller syncing the same inode.
    pub async fn sync<F, Fut>(&self, file: &File, fsync: F) -> io::Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = io::Result<()>>,
    {
        metrics::counter!(FSYNC_REQUESTS).increment(1);
        let meta = file.metadata()?;
        let key = (meta.dev(), meta.ino());
        let inode = self.inodes.lock().unwrap().entry(key).or_default().clone();
        let result = inode.sync(fsync).await;
        let mut inodes = self.inodes.lock().unwrap();
        // Only the map and this call hold it: nobody is waiting on this inode.
        if Arc::strong_count(&inode) == 2 {
            inodes.remove(&key);
        }
        result
    }

    /// Makes `file` durable at once, for a file no one else can be syncing
    /// (one this caller just created): there is no round to share, and it
    /// is counted like the others.
    pub fn sync_alone(file: &File) -> io::Result<()> {
        metrics::counter!(FSYNC_REQUESTS).increment(1);
        metrics::counter!(FSYNCS).increment(1);
        file.sync_all()
    }
}

impl Inode {
    async fn sync<F, Fut>(&self, fsync: F) -> io::Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = io::Result<()>>,
    {
        // The first round that starts from now on serves this request: this
        // caller's own if none runs, else the one after the running one.
        let (mut finished, mine, mut leads) = {
            let mut rounds = self.rounds.lock().unwrap();
            let mine = rounds.started + 1;
            (self.finished.subscribe(), mine, rounds.start(mine))
        };
        loop {
            if leads {
                let lead = Leading {
                    inode: self,
                    round: mine,
                    done: false,
                };
                metrics::counter!(FSYNCS).increment(1);
                let result = fsync().await;
                lead.finish(&result);
                return result;
            }
            // The sender lives in `self`: `changed` cannot fail.
            if finished.changed().await.is_err() {
                return Err(io::Error::other("sync abandoned"));
            }
            let last = finished.borrow_and_update().clone();
            if last.round >= mine {
                return last.result();
            }
            leads = self.rounds.lock().unwrap().start(mine);
        }
    }
}

impl Rounds {
    /// Starts round `mine` if no round runs and it has not started yet.
    fn start(&mut self, mine: u64) -> bool {
        let free = !self.running && self.started < mine;
        if free {
            self.started = mine;
            self.running = true;
        }
        free
    }
}

/// The round this caller runs; if the caller is dropped before the round
/// ends, the round is given up and a waiter runs the next one instead.
struct Leading<'a> {
    inode: &'a Inode,
    round: u64,
    done: bool,
}

impl Leading<'_> {
    fn finish(mut self, result: &io::Result<()>) {
        let error = result.as_ref().err().map(|e| (e.kind(), e.raw_os_error()));
        // Under the lock, so that a later round cannot publish before this one.
        let mut rounds = self.inode.rounds.lock().unwrap();
        rounds.running = false;
        self.inode.finished.send_replace(Finished {
            round: self.round,
            error,
        });
        self.done = true;
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Waiters asked during this round: they need the next one anyway.
            let mut rounds = self.inode.rounds.lock().unwrap();
            rounds.running = false;
            self.inode.finished.send_modify(|_| {});
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::sync::oneshot;

    const EIO: i32 = 5;

    fn temp_file() -> (tempfile::TempDir, Arc<File>) {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        (dir, Arc::new(file))
    }

    /// Waits until `n` callers have asked to sync the one inode `sync` knows.
    async fn waiting(sync: &GroupSync, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} callers never waited together"
            );
            let count = sync
                .inodes
                .lock()
                .unwrap()
                .values()
                .next()
                .map(|i| i.finished.receiver_count());
            if count == Some(n) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_made_during_a_sync_share_the_next_one() {
        let sync = Arc::new(GroupSync::default());
        let (_dir, file) = temp_file();
        let runs = Arc::new(AtomicUsize::new(0));
        let (started_tx, started) = oneshot::channel();
        let (release, release_rx) = oneshot::channel::<()>();
        let first = tokio::spawn({
            let (sync, file, runs) = (sync.clone(), file.clone(), runs.clone());
            async move {
                sync.sync(&file, || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    started_tx.send(()).unwrap();
                    release_rx.await.unwrap();
                    Ok(())
                })
                .await
            }
        });
        started.await.unwrap();
        let later: Vec<_> = (0..10)
            .map(|_| {
                let (sync, file, runs) = (sync.clone(), file.clone(), runs.clone());
                tokio::spawn(async move {
                    sync.sync(&file, || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        file.sync_all()
                    })
                    .await
                })
            })
            .collect();
        waiting(&sync, 11).await;
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        for task in later {
            task.await.unwrap().unwrap();
        }
        // The ten requests made while the first sync ran were served by one more.
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert!(sync.inodes.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_fails_every_request_it_served() {
        let sync = Arc::new(GroupSync::default());
        let (_dir, file) = temp_file();
        let (started_tx, started) = oneshot::channel();
        let (release, release_rx) = oneshot::channel::<()>();
        let first = tokio::spawn({
            let (sync, file) = (sync.clone(), file.clone());
            async move {
                sync.sync(&file, || async move {
                    started_tx.send(()).unwrap();
                    release_rx.await.unwrap();
                    Ok(())
                })
                .await
            }
        });
        started.await.unwrap();
        let failing = |sync: Arc<GroupSync>, file: Arc<File>| {
            tokio::spawn(async move {
                sync.sync(&file, || async { Err(io::Error::from_raw_os_error(EIO)) })
                    .await
            })
        };
        let (a, b) = (failing(sync.clone(), file.clone()), failing(sync.clone(), file.clone()));
        waiting(&sync, 3).await;
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        for task in [a, b] {
            let error = task.await.unwrap().unwrap_err();
            assert_eq!(error.raw_os_error(), Some(EIO));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_runs_the_round_its_leader_abandoned() {
        let sync = Arc::new(GroupSync::default());
        let (_dir, file) = temp_file();
        let (started_tx, started) = oneshot::channel();
        let leader = tokio::spawn({
            let (sync, file) = (sync.clone(), file.clone());
            async move {
                sync.sync(&file, || async move {
                    started_tx.send(()).unwrap();
                    std::future::pending::<()>().await;
                    Ok(())
                })
                .await
            }
        });
        started.await.unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let waiter = tokio::spawn({
            let (sync, file, runs) = (sync.clone(), file.clone(), runs.clone());
            async move {
                sync.sync(&file, || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    file.sync_all()
                })
                .await
            }
        });
        waiting(&sync, 2).await;
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        let waited = tokio::time::timeout(Duration::from_secs(10), waiter).await;
        waited.expect("the waiter never ran the round").unwrap().unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn different_files_are_synced_separately() {
        let sync = GroupSync::default();
        let (_a, a) = temp_file();
        let (_b, b) = temp_file();
        let runs = AtomicUsize::new(0);
        for file in [&a, &b, &a] {
            sync.sync(file, || async {
                runs.fetch_add(1, Ordering::SeqCst);
                file.sync_all()
            })
            .await
            .unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}
