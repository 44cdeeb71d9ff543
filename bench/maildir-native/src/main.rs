//! What the storage itself allows the maildir profile: the file calls
//! `queue/maildir` makes for one copy (create in `tmp/`, write 5 KiB, fsync,
//! rename into `new/`, fsync `new/`), made natively by 1, 10 and 100 threads
//! at once, with the rate and the process's CPU per copy.
//!
//! ```text
//! maildir-native DIR [COPIES] [MODE...]     # a table for 1, 10 and 100 threads
//! maildir-native --threads N DIR COPIES     # one run into DIR/copy (kept): "copies/s cpu-us"
//! ```
//!
//! Modes (default `copy`):
//! - `copy`: every writer fsyncs its file and `new/` itself (what
//!   `queue/maildir` does; the journal batches concurrent fsyncs);
//! - `group`: writers hand their written files to one committer thread,
//!   which fsyncs them in turn, renames them and fsyncs `new/` once per batch;
//! - `syncfs`: the same committer, with one `syncfs()` before and one after
//!   the batch's renames instead of the fsyncs.
//!
//! Compare its scaling (100 threads against 1) with the maildir profile's on
//! the same file system (`MAILDIR_ROOT=DIR bench/run.sh`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The body of every copy: 5 KiB, the benchmark's message size.
const MESSAGE: [u8; 5 * 1024] = [b'x'; 5 * 1024];

/// How a copy is made durable.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Copy,
    Group,
    Syncfs,
}

/// The modes by name, for parsing and printing.
const MODES: [(&str, Mode); 3] = [("copy", Mode::Copy), ("group", Mode::Group), ("syncfs", Mode::Syncfs)];

impl Mode {
    fn parse(name: &str) -> Option<Mode> {
        MODES.iter().find(|(n, _)| *n == name).map(|&(_, mode)| mode)
    }

    fn name(self) -> &'static str {
        MODES
            .iter()
            .find(|(_, m)| *m == self)
            .map(|&(n, _)| n)
            .expect("every mode is in MODES")
    }
}

/// The rate and cost of one run.
struct Figures {
    copies_per_second: f64,
    cpu_us_per_copy: f64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.as_slice() {
        [flag, threads, dir, copies] if flag == "--threads" => one_run(threads, dir, copies),
        [dir, rest @ ..] if !dir.starts_with('-') => table(dir, rest),
        _ => Err(usage()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("maildir-native: {error}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> io::Error {
    io::Error::other(
        "usage: maildir-native DIR [COPIES] [copy|group|syncfs ...]\n       \
         maildir-native --threads N DIR COPIES",
    )
}

fn number(text: &str) -> io::Result<usize> {
    text.parse().map_err(|_| usage())
}

/// `--threads N DIR COPIES`: one run into `DIR/copy`, left in place. The
/// caller removes it when it is done: a mass delete slows ext4's inode
/// allocation down for minutes, which would skew what follows.
fn one_run(threads: &str, dir: &str, copies: &str) -> io::Result<()> {
    let root = Path::new(dir).join("copy");
    let figures = run(&root, number(threads)?, number(copies)?, Mode::Copy)?;
    println!("{:.0} {:.0}", figures.copies_per_second, figures.cpu_us_per_copy);
    Ok(())
}

/// `DIR [COPIES] [MODE...]`: 1, 10 and 100 threads per mode, in a temporary
/// directory under `DIR` that is removed afterwards.
fn table(dir: &str, rest: &[String]) -> io::Result<()> {
    let (copies, modes) = match rest.split_first() {
        Some((first, modes)) if first.parse::<usize>().is_ok() => (number(first)?, modes),
        _ => (5000, rest),
    };
    let modes = if modes.is_empty() {
        vec![Mode::Copy]
    } else {
        modes
            .iter()
            .map(|m| Mode::parse(m).ok_or_else(usage))
            .collect::<io::Result<_>>()?
    };
    let work = PathBuf::from(dir).join(format!("storage-{}", std::process::id()));
    fs::create_dir(&work)?;
    let outcome = print_table(&work, copies, &modes);
    let _ = fs::remove_dir_all(&work);
    outcome
}

/// Runs every mode with 1, 10 and 100 threads under `work`, a line each.
fn print_table(work: &Path, copies: usize, modes: &[Mode]) -> io::Result<()> {
    println!(
        "{:>6} {:>7} {:>9} {:>11} {:>10}",
        "mode", "threads", "copies/s", "cpu-us/copy", "x 1 thread"
    );
    for &mode in modes {
        let mut single = None;
        for threads in [1, 10, 100] {
            let root = work.join(format!("{}.{threads}", mode.name()));
            let figures = run(&root, threads, copies, mode)?;
            let single = *single.get_or_insert(figures.copies_per_second);
            println!(
                "{:>6} {threads:>7} {:>9.0} {:>11.0} {:>10.2}",
                mode.name(),
                figures.copies_per_second,
                figures.cpu_us_per_copy,
                figures.copies_per_second / single
            );
        }
    }
    Ok(())
}

/// Writes `copies` maildir copies under `root` with `threads` writers.
fn run(root: &Path, threads: usize, copies: usize, mode: Mode) -> io::Result<Figures> {
    fs::create_dir_all(root.join("tmp"))?;
    fs::create_dir_all(root.join("new"))?;
    let taken = AtomicUsize::new(0);
    let committer = (mode != Mode::Copy).then(|| Committer::start(root, mode));
    let (cpu0, t0) = (process_cpu(), Instant::now());
    thread::scope(|scope| {
        let writers: Vec<_> = (0..threads)
            .map(|name| {
                let (taken, committer) = (&taken, committer.as_ref());
                scope.spawn(move || -> io::Result<()> {
                    loop {
                        let n = taken.fetch_add(1, Ordering::Relaxed);
                        if n >= copies {
                            return Ok(());
                        }
                        write_copy(root, &format!("{name}.{n}"), committer)?;
                    }
                })
            })
            .collect();
        writers.into_iter().try_for_each(|w| w.join().expect("writer panicked"))
    })?;
    if let Some(committer) = committer {
        committer.stop()?;
    }
    let (elapsed, cpu) = (t0.elapsed(), process_cpu() - cpu0);
    Ok(Figures {
        copies_per_second: copies as f64 / elapsed.as_secs_f64(),
        cpu_us_per_copy: cpu.as_secs_f64() * 1e6 / copies as f64,
    })
}

/// One copy: written into `tmp/`, then made durable under `new/`, by the
/// writer itself or by the committer.
fn write_copy(root: &Path, name: &str, committer: Option<&Committer>) -> io::Result<()> {
    let tmp = root.join("tmp").join(name);
    let new = root.join("new").join(name);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(&MESSAGE)?;
    if let Some(committer) = committer {
        return committer.commit(Pending { file, tmp, new });
    }
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, &new)?;
    File::open(root.join("new"))?.sync_all()
}

/// A written copy waiting for the committer.
struct Pending {
    file: File,
    tmp: PathBuf,
    new: PathBuf,
}

/// A pending copy and where to say that it is durable.
type Waiting = (Pending, mpsc::SyncSender<io::Result<()>>);

/// The queue the writers share with the committer thread.
#[derive(Default)]
struct Queue {
    pending: Vec<Waiting>,
    stopping: bool,
}

/// One thread that makes batches of written copies durable and renames them.
struct Committer {
    queue: Arc<(Mutex<Queue>, Condvar)>,
    thread: thread::JoinHandle<io::Result<()>>,
}

impl Committer {
    fn start(root: &Path, mode: Mode) -> Committer {
        let queue = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
        let (root, shared) = (root.to_owned(), queue.clone());
        let thread = thread::spawn(move || commit_batches(&root, mode, &shared));
        Committer { queue, thread }
    }

    /// Hands `copy` over and waits until it is durable under `new/`.
    fn commit(&self, copy: Pending) -> io::Result<()> {
        let (done, wait) = mpsc::sync_channel(1);
        let (lock, ready) = &*self.queue;
        lock.lock().unwrap().pending.push((copy, done));
        ready.notify_one();
        wait.recv().map_err(|_| io::Error::other("the committer stopped"))?
    }

    fn stop(self) -> io::Result<()> {
        let (lock, ready) = &*self.queue;
        lock.lock().unwrap().stopping = true;
        ready.notify_one();
        self.thread.join().expect("committer panicked")
    }
}

fn commit_batches(root: &Path, mode: Mode, queue: &(Mutex<Queue>, Condvar)) -> io::Result<()> {
    let (lock, ready) = queue;
    loop {
        let batch = {
            let mut queue = lock.lock().unwrap();
            while queue.pending.is_empty() && !queue.stopping {
                queue = ready.wait(queue).unwrap();
            }
            if queue.pending.is_empty() {
                return Ok(());
            }
            std::mem::take(&mut queue.pending)
        };
        let outcome = commit_batch(root, mode, &batch);
        for (_, done) in batch {
            let _ = done.send(
                outcome
                    .as_ref()
                    .copied()
                    .map_err(|e| io::Error::new(e.kind(), e.to_string())),
            );
        }
    }
}

/// Makes every copy of `batch` durable under `new/`.
fn commit_batch(root: &Path, mode: Mode, batch: &[Waiting]) -> io::Result<()> {
    if mode == Mode::Syncfs {
        syncfs(root)?;
    } else {
        batch.iter().try_for_each(|(copy, _)| copy.file.sync_all())?;
    }
    batch
        .iter()
        .try_for_each(|(copy, _)| fs::rename(&copy.tmp, &copy.new))?;
    if mode == Mode::Syncfs {
        syncfs(root)
    } else {
        File::open(root.join("new"))?.sync_all()
    }
}

fn syncfs(root: &Path) -> io::Result<()> {
    let dir = File::open(root)?;
    // SAFETY: `dir` is an open descriptor for the duration of the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The CPU time of the whole process so far, every thread included.
fn process_cpu() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec for the call to fill in.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_leaves_each_copy_whole_in_new_and_nothing_in_tmp() {
        let base = std::env::temp_dir().join(format!("maildir-native-test-{}", std::process::id()));
        for mode in [Mode::Copy, Mode::Group, Mode::Syncfs] {
            let root = base.join(mode.name());
            let figures = run(&root, 4, 40, mode).unwrap();
            assert!(figures.copies_per_second > 0.0 && figures.cpu_us_per_copy > 0.0);
            let mut numbers: Vec<usize> = fs::read_dir(root.join("new"))
                .unwrap()
                .map(|entry| {
                    let path = entry.unwrap().path();
                    assert_eq!(fs::read(&path).unwrap(), MESSAGE, "{}", path.display());
                    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
                    name.rsplit_once('.').unwrap().1.parse().unwrap()
                })
                .collect();
            numbers.sort();
            assert_eq!(numbers, (0..40).collect::<Vec<_>>(), "{}", mode.name());
            assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0, "{}", mode.name());
        }
        fs::remove_dir_all(&base).unwrap();
    }
}
