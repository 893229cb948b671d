//! One writer thread per relay store, committing writes in groups.
//!
//! Why: with `synchronous=FULL` every commit costs one fsync, and a disk
//! does only a few hundred to a few thousand of those per second, while
//! every relay request writes (at least its nonce). So concurrent callers
//! hand their write to this thread and wait; the thread takes the first
//! job, drains whatever else is queued (up to [`MAX_BATCH`]), and runs them
//! all in one `BEGIN IMMEDIATE` ... `COMMIT`: **one fsync per batch, not
//! per request**. Each job runs in its own savepoint, so one whose SQL fails
//! (or that declines to write) is rolled back alone. Every caller is
//! answered only after `COMMIT` returned, i.e. once its write is durable;
//! if the commit fails, every job of the batch gets the error.
//!
//! Jobs run one after the other on one connection, so a job's
//! read-then-write steps are as atomic as in a transaction of its own, and
//! writers of this store never contend for SQLite's write lock (other
//! processes on the same file still queue on it, with the busy timeout).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use retalk_proto::relay::StoreError;
use rusqlite::Connection;

use crate::conn::db_err;

/// Jobs committed together at most: bounds the time a batch holds the
/// write lock (other processes, an operator's `sqlite3`) and the latency
/// of its first caller.
pub(crate) const MAX_BATCH: usize = 256;

/// Tells a caller how its job ended, given whether the batch committed.
type Deliver = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A caller's work. Given the connection (inside the batch's transaction
/// and the job's savepoint), it runs and says whether to keep its writes;
/// given `None` (the batch failed before reaching it), it only hands back
/// its [`Deliver`].
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Deliver) + Send>;

/// The handle to the writer thread: submit jobs; dropping it closes the
/// queue, lets the thread finish what is queued, and joins it.
pub(crate) struct Writer {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

/// A submitted job's answer, to wait for.
pub(crate) struct Pending<T>(Receiver<Result<T, StoreError>>);

impl<T> Pending<T> {
    /// Blocks until the job's batch committed (or failed).
    pub(crate) fn wait(self) -> Result<T, StoreError> {
        self.0.recv().map_err(|_| {
            StoreError::msg("sqlite relay store: the writer thread stopped before answering")
        })?
    }
}

impl Writer {
    /// Starts the writer thread on `conn`, which it owns from now on.
    pub(crate) fn start(conn: Connection) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("retalk-sqlite-writer".into())
            .spawn(move || run(conn, queue))
            .map_err(crate::conn::io_err)?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Runs `f` as one job and waits until it is durable. `f` returns its
    /// value and whether to keep its writes (false rolls them back, as
    /// does an error).
    pub(crate) fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<(T, bool)> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(f)?.wait()
    }

    /// Queues `f` as one job without waiting for it.
    pub(crate) fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<(T, bool)> + Send + 'static,
    ) -> Result<Pending<T>, StoreError> {
        let (answer, pending) = mpsc::sync_channel(1);
        self.then(f, move |outcome| {
            // The caller may have gone (a panicking thread): nobody to tell.
            let _ = answer.send(outcome);
        })?;
        Ok(Pending(pending))
    }

    /// Queues `f` as one job and calls `done` on the writer thread with
    /// its outcome once its batch committed (or failed). Jobs run in the
    /// order they were queued, so a job queued later by the same caller is
    /// never durable before this one.
    pub(crate) fn then<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<(T, bool)> + Send + 'static,
        done: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let job: Job = Box::new(move |conn| {
            let (keep, result) = match conn.map(f) {
                Some(Ok((value, keep))) => (keep, Ok(value)),
                Some(Err(e)) => (false, Err(db_err(e))),
                None => (false, Err(StoreError::msg("not run"))),
            };
            let deliver: Deliver = Box::new(move |batch| done(batch.and(result)));
            (keep, deliver)
        });
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())
    }
}

fn stopped() -> StoreError {
    StoreError::msg("sqlite relay store: the writer thread has stopped")
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            // Panics are caught per batch inside; nothing to report here.
            let _ = thread.join();
        }
    }
}

/// The writer thread: batch after batch until every sender is gone.
fn run(conn: Connection, queue: Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A panicking job (a bug) drops its batch's answers, so its callers
        // get an error, and rolls the batch back; the writer carries on.
        if catch_unwind(AssertUnwindSafe(|| commit_batch(&conn, batch))).is_err()
            && !conn.is_autocommit()
        {
            let _ = sql(&conn, "ROLLBACK");
        }
    }
}

/// Runs `batch` in one transaction and answers every job after the commit.
fn commit_batch(conn: &Connection, batch: Vec<Job>) {
    let mut jobs = batch.into_iter();
    let mut done: Vec<Deliver> = Vec::with_capacity(jobs.len());
    let outcome = run_jobs(conn, &mut jobs, &mut done).and_then(|()| sql(conn, "COMMIT"));
    match outcome {
        Ok(()) => {
            for deliver in done {
                deliver(Ok(()));
            }
        }
        Err(why) => {
            if !conn.is_autocommit() {
                let _ = sql(conn, "ROLLBACK");
            }
            done.extend(jobs.map(|job| job(None).1));
            for deliver in done {
                deliver(Err(StoreError::msg(format!(
                    "sqlite relay store: write not committed: {why}"
                ))));
            }
        }
    }
}

/// Runs one transaction-control statement, prepared once per connection.
fn sql(conn: &Connection, statement: &str) -> Result<(), String> {
    conn.prepare_cached(statement)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(|e| format!("{statement}: {e}"))
}

/// Begins the transaction and runs each job in a savepoint; stops at the
/// first failure of the transaction itself (not of a job).
fn run_jobs(
    conn: &Connection,
    jobs: &mut impl Iterator<Item = Job>,
    done: &mut Vec<Deliver>,
) -> Result<(), String> {
    sql(conn, "BEGIN IMMEDIATE")?;
    for job in jobs {
        if let Err(e) = sql(conn, "SAVEPOINT job") {
            done.push(job(None).1);
            return Err(e);
        }
        let (keep, deliver) = job(Some(conn));
        done.push(deliver);
        if !keep {
            sql(conn, "ROLLBACK TO job")?;
        }
        sql(conn, "RELEASE job")?;
        // Some errors (disk full, I/O) make SQLite roll back the whole
        // transaction: then nothing before this point may be acknowledged.
        if conn.is_autocommit() {
            return Err("the transaction was rolled back".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::mpsc;

    use super::*;

    fn writer(dir: &tempfile::TempDir) -> Writer {
        let conn = crate::conn::open(&dir.path().join("w.db")).unwrap();
        conn.execute_batch("CREATE TABLE t(x INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        Writer::start(conn).unwrap()
    }

    fn insert(x: i64) -> impl FnOnce(&Connection) -> rusqlite::Result<(i64, bool)> + Send {
        move |c| {
            c.execute("INSERT INTO t(x, v) VALUES(?1, 'v')", [x])?;
            Ok((x, true))
        }
    }

    fn rows(dir: &tempfile::TempDir) -> Vec<i64> {
        let c = Connection::open(dir.path().join("w.db")).unwrap();
        let mut s = c.prepare("SELECT x FROM t ORDER BY x").unwrap();
        let r = s.query_map([], |r| r.get(0)).unwrap();
        r.collect::<Result<_, _>>().unwrap()
    }

    /// Holds the writer inside a job until released, so that everything
    /// submitted meanwhile lands in the next batch, together.
    fn hold(w: &Writer) -> (mpsc::Sender<()>, Pending<()>) {
        let (release, held) = mpsc::channel::<()>();
        let (started, running) = mpsc::channel::<()>();
        let gate = w
            .submit(move |_| {
                started.send(()).unwrap();
                held.recv().unwrap();
                Ok(((), true))
            })
            .unwrap();
        running.recv().unwrap();
        (release, gate)
    }

    /// In one batch: a job violating a constraint and one declining to
    /// write are rolled back alone; the others commit and are answered.
    #[test]
    fn a_failing_job_does_not_affect_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir);
        let (release, gate) = hold(&w);
        let batch_size = |c: &Connection| -> rusqlite::Result<i64> {
            // Rows written so far in this transaction, seen by the job.
            c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
        };
        let one = w.submit(insert(1)).unwrap();
        let dup = w
            .submit(|c| {
                c.execute("INSERT INTO t(x, v) VALUES(5, 'a')", [])?;
                // Fails after writing: its first row must go too.
                c.execute("INSERT INTO t(x, v) VALUES(1, 'dup')", [])?;
                Ok(((), true))
            })
            .unwrap();
        let declined = w
            .submit(|c| {
                c.execute("INSERT INTO t(x, v) VALUES(6, 'b')", [])?;
                Ok(((), false))
            })
            .unwrap();
        let two = w.submit(insert(2)).unwrap();
        let seen = w.submit(move |c| Ok((batch_size(c)?, true))).unwrap();
        release.send(()).unwrap();
        gate.wait().unwrap();
        assert_eq!(one.wait().unwrap(), 1);
        let err = dup.wait().unwrap_err();
        assert!(err.to_string().contains("UNIQUE"), "{err}");
        declined.wait().unwrap();
        assert_eq!(two.wait().unwrap(), 2);
        // The last job saw exactly 1 and 2: it ran in the same transaction.
        assert_eq!(seen.wait().unwrap(), 2);
        assert_eq!(rows(&dir), [1, 2]);
    }

    /// A failed commit fails every job of the batch, none is acknowledged.
    #[test]
    fn a_failed_commit_fails_the_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir);
        let (release, gate) = hold(&w);
        let one = w.submit(insert(1)).unwrap();
        // Ends the transaction under the writer's feet, as an I/O error
        // that makes SQLite roll back would.
        let rogue = w
            .submit(|c| {
                c.execute_batch("ROLLBACK")?;
                Ok(((), true))
            })
            .unwrap();
        let after = w.submit(insert(2)).unwrap();
        release.send(()).unwrap();
        gate.wait().unwrap();
        assert!(one.wait().is_err());
        assert!(rogue.wait().is_err());
        let err = after.wait().unwrap_err();
        assert!(err.to_string().contains("not committed"), "{err}");
        assert!(rows(&dir).is_empty());
        // The writer carries on.
        assert_eq!(w.write(insert(3)).unwrap(), 3);
        assert_eq!(rows(&dir), [3]);
    }

    /// A panicking job costs its batch an error, not the writer.
    #[test]
    fn a_panicking_job_does_not_kill_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir);
        let err = w
            .write(|c| -> rusqlite::Result<((), bool)> {
                c.execute("INSERT INTO t(x, v) VALUES(1, 'v')", [])?;
                panic!("bug")
            })
            .unwrap_err();
        assert!(
            err.to_string().contains("stopped before answering"),
            "{err}"
        );
        assert_eq!(w.write(insert(2)).unwrap(), 2);
        assert_eq!(rows(&dir), [2]);
    }

    /// Dropping the writer commits what is queued, then joins the thread.
    #[test]
    fn drop_finishes_queued_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir);
        let (release, gate) = hold(&w);
        let queued: Vec<_> = (1..=3).map(|x| w.submit(insert(x)).unwrap()).collect();
        release.send(()).unwrap();
        drop(w);
        gate.wait().unwrap();
        for (x, p) in (1..=3).zip(queued) {
            assert_eq!(p.wait().unwrap(), x);
        }
        assert_eq!(rows(&dir), [1, 2, 3]);
    }
}
