//! The clients' "GPU": a worker thread that signals fences (syncobj points, vgem fences) a
//! given time after the client asked, the way a GPU finishes work some time after submission.
//!
//! Jobs run in due order on one thread. Dropping the worker runs whatever is still scheduled at
//! once (a fence left pending could hold the compositor or, for vgem, signal itself with an
//! error 10 s later) and joins the thread. A job that fails is kept and reported by
//! [`FenceWorker::check`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::anyhow;

type Action = Box<dyn FnOnce() -> io::Result<()> + Send>;

struct Job {
    due: Instant,
    seq: u64,
    what: String,
    action: Action,
}

impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Job {}
impl PartialOrd for Job {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Job {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// A thread that runs signalling jobs when they are due.
pub struct FenceWorker {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    errors: Arc<Mutex<Vec<String>>>,
    seq: u64,
}

impl FenceWorker {
    /// Starts the thread.
    pub fn spawn(name: &str) -> io::Result<FenceWorker> {
        let (tx, rx) = mpsc::channel::<Job>();
        let errors = Arc::new(Mutex::new(Vec::new()));
        let thread_errors = errors.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut queue: BinaryHeap<Reverse<Job>> = BinaryHeap::new();
                let run = |job: Job| {
                    if let Err(err) = (job.action)() {
                        thread_errors
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(format!("{}: {err}", job.what));
                    }
                };
                loop {
                    let now = Instant::now();
                    while queue.peek().is_some_and(|Reverse(j)| j.due <= now) {
                        let Reverse(job) = queue.pop().expect("peeked");
                        run(job);
                    }
                    let received = match queue.peek() {
                        Some(Reverse(next)) => {
                            rx.recv_timeout(next.due.saturating_duration_since(now))
                        }
                        None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    };
                    match received {
                        Ok(job) => queue.push(Reverse(job)),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => {
                            // The client is done: nothing may stay pending.
                            while let Some(Reverse(job)) = queue.pop() {
                                run(job);
                            }
                            return;
                        }
                    }
                }
            })?;
        Ok(FenceWorker {
            jobs: Some(tx),
            thread: Some(thread),
            errors,
            seq: 0,
        })
    }

    /// Runs `action` (naming it `what` in errors) `delay` from now.
    pub fn after(
        &mut self,
        delay: Duration,
        what: impl Into<String>,
        action: impl FnOnce() -> io::Result<()> + Send + 'static,
    ) {
        self.seq += 1;
        let job = Job {
            due: Instant::now() + delay,
            seq: self.seq,
            what: what.into(),
            action: Box::new(action),
        };
        if let Some(jobs) = &self.jobs {
            if let Err(mpsc::SendError(job)) = jobs.send(job) {
                // The thread is gone (it panicked): do it here rather than never.
                let _ = (job.action)();
            }
        }
    }

    /// The first job that failed, as an error.
    pub fn check(&self) -> anyhow::Result<()> {
        let errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        match errors.first() {
            Some(first) => Err(anyhow!("the fence worker failed: {first}")),
            None => Ok(()),
        }
    }
}

impl Drop for FenceWorker {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_in_due_order_and_the_rest_on_drop() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut worker = FenceWorker::spawn("test-worker").unwrap();
        let start = Instant::now();
        for (delay, tag) in [(60u64, "late"), (10, "early"), (3_600_000, "never-due")] {
            let log = log.clone();
            worker.after(Duration::from_millis(delay), tag, move || {
                log.lock().unwrap().push((tag, start.elapsed()));
                Ok(())
            });
        }
        worker.after(Duration::ZERO, "failing", || Err(io::Error::other("boom")));
        while log.lock().unwrap().len() < 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let seen = log.lock().unwrap().clone();
        assert_eq!(seen[0].0, "early");
        assert_eq!(seen[1].0, "late");
        assert!(seen[1].1 >= Duration::from_millis(60), "{seen:?}");
        let err = worker.check().unwrap_err().to_string();
        assert!(err.contains("failing: boom"), "{err}");
        drop(worker);
        let seen = log.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "the job not yet due ran on drop: {seen:?}");
        assert!(seen[2].1 < Duration::from_secs(60));
    }
}
