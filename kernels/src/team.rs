//! A team of threads that spin between the kernels' parallel loops, so a loop that starts a few
//! microseconds after the last one finds its helpers awake.
//!
//! A generation step runs ~6 parallel loops per layer (projections, attention, feed-forward),
//! ~180 per token. Rayon's idle workers sleep after a few dozen yields, and waking a sleeping
//! thread on a virtual machine costs tens of microseconds (an interrupt to a halted vCPU): the
//! one-row SmolLM2 feed-forward matmul took 28 us on the caller's CPU alone and 100 us when each
//! call was handed to a worker on the other CPU. [`for_each`] runs a loop on this team instead:
//! the caller takes tasks too, the helpers spin for [`SPIN`] after their last task (yielding
//! now and then to any other thread on their CPU) before they sleep, and rayon stays the
//! fallback where the team is taken (another thread's loop, a loop nested in a task).

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

/// How long a helper spins after its last task before it sleeps: longer than the gaps between
/// one step's loops (the single-threaded ops between them, the constraint's work between steps).
const SPIN: Duration = Duration::from_micros(1000);

/// One loop: `n` tasks taken in order by whoever comes first.
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    panicked: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl Job {
    /// Takes and runs tasks until none are left.
    ///
    /// SAFETY: `f` is alive (the caller of [`for_each`] waits for every helper to leave).
    unsafe fn work(&self) {
        let f = &*self.f;
        loop {
            let i = self.next.fetch_add(1, SeqCst);
            if i >= self.n {
                return;
            }
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(i))) {
                self.panicked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
            }
            self.done.fetch_add(1, SeqCst);
        }
    }
}

struct Team {
    /// One loop at a time; a caller that finds it taken uses rayon.
    caller: Mutex<()>,
    /// Bumped for every new loop.
    epoch: AtomicUsize,
    /// The running loop, null between loops.
    job: AtomicPtr<Job>,
    /// Helpers that may be reading `job`.
    busy: AtomicUsize,
    /// Helpers asleep, and what they sleep on.
    sleeping: AtomicUsize,
    bed: Mutex<()>,
    wake: Condvar,
    helpers: usize,
}

// SAFETY: `job` points at a caller's stack only while that caller waits for `busy` to drain.
unsafe impl Sync for Team {}
unsafe impl Send for Team {}

thread_local! {
    /// Set on the team's helpers and on a caller while it runs a loop: a loop started from
    /// inside a task runs on rayon instead.
    static IN_TEAM: Cell<bool> = const { Cell::new(false) };
}

fn team() -> &'static Team {
    static TEAM: OnceLock<&'static Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let helpers = rayon::current_num_threads().saturating_sub(1);
        let team: &'static Team = Box::leak(Box::new(Team {
            caller: Mutex::new(()),
            epoch: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            busy: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            bed: Mutex::new(()),
            wake: Condvar::new(),
            helpers,
        }));
        for i in 0..helpers {
            std::thread::Builder::new()
                .name(format!("kernel-team-{i}"))
                .spawn(move || helper(team))
                .expect("cannot start a kernel thread");
        }
        team
    })
}

fn helper(team: &'static Team) {
    IN_TEAM.with(|t| t.set(true));
    let mut seen = team.epoch.load(SeqCst);
    loop {
        // Spin until a new loop, then sleep until one.
        let since = Instant::now();
        let mut spins = 0u32;
        while team.epoch.load(SeqCst) == seen {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(256) {
                continue;
            }
            // Now and then: let another thread on this CPU run, and see whether to sleep.
            std::thread::yield_now();
            if since.elapsed() > SPIN {
                let mut bed = team.bed.lock().unwrap_or_else(|p| p.into_inner());
                team.sleeping.fetch_add(1, SeqCst);
                while team.epoch.load(SeqCst) == seen {
                    bed = team.wake.wait(bed).unwrap_or_else(|p| p.into_inner());
                }
                team.sleeping.fetch_sub(1, SeqCst);
            }
        }
        seen = team.epoch.load(SeqCst);
        team.busy.fetch_add(1, SeqCst);
        let job = team.job.load(SeqCst);
        if !job.is_null() {
            // SAFETY: the caller clears `job` and then waits for `busy` to drain before the
            // job leaves its stack; this helper counted itself busy before reading it.
            unsafe { (*job).work() };
        }
        team.busy.fetch_sub(1, SeqCst);
    }
}

/// Runs `f(0)`, ..., `f(n - 1)` in parallel (each once, in no set order) on the kernel team, or
/// on rayon when the team is taken; returns when all have run. A panic in `f` is re-raised here
/// (on the team, once no task is running).
pub(crate) fn for_each(n: usize, f: impl Fn(usize) + Sync) {
    use rayon::prelude::*;
    if n == 0 {
        return;
    }
    if n == 1 {
        return f(0);
    }
    let team = team();
    let guard = if team.helpers == 0 || IN_TEAM.with(|t| t.get()) {
        None
    } else {
        // (Poisoned by a task's panic re-raised below: the team itself is fine.)
        match team.caller.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    };
    let Some(_guard) = guard else {
        return (0..n).into_par_iter().for_each(&f);
    };
    let f: &(dyn Fn(usize) + Sync) = &f;
    // SAFETY: only the lifetime is erased; the job is withdrawn and every helper has left it
    // before this function returns.
    let f: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(f) };
    let job = Job {
        f,
        n,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        panicked: Mutex::new(None),
    };
    team.job.store(&job as *const Job as *mut Job, SeqCst);
    team.epoch.fetch_add(1, SeqCst);
    if team.sleeping.load(SeqCst) > 0 {
        let _bed = team.bed.lock().unwrap_or_else(|p| p.into_inner());
        team.wake.notify_all();
    }
    IN_TEAM.with(|t| t.set(true));
    // SAFETY: `f` lives on this stack until the end of the function.
    unsafe { job.work() };
    IN_TEAM.with(|t| t.set(false));
    // The helpers' last tasks, then the helpers themselves out of the job (yielding now and
    // then, in case one was descheduled by another thread on its CPU).
    spin_until(|| job.done.load(SeqCst) >= n);
    team.job.store(std::ptr::null_mut(), SeqCst);
    spin_until(|| team.busy.load(SeqCst) == 0);
    if let Some(e) = job.panicked.into_inner().unwrap_or_else(|p| p.into_inner()) {
        resume_unwind(e);
    }
}

fn spin_until(done: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !done() {
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(256) {
            std::thread::yield_now();
        }
    }
}

/// Runs `f(i, chunk)` for every `i`-th chunk of `len` items of `out` (the last may be
/// shorter) in parallel, as [`for_each`] does.
pub(crate) fn for_each_chunk<T: Send>(
    out: &mut [T],
    len: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    struct Base<T>(*mut T);
    // SAFETY: each task below takes a chunk of its own.
    unsafe impl<T: Send> Sync for Base<T> {}
    let total = out.len();
    let base = Base(out.as_mut_ptr());
    let base = &base;
    for_each(total.div_ceil(len.max(1)), |i| {
        let start = i * len;
        // SAFETY: chunks `i` are disjoint and inside `out`, which outlives the loop.
        let chunk =
            unsafe { std::slice::from_raw_parts_mut(base.0.add(start), len.min(total - start)) };
        f(i, chunk)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn chunks_cover_the_slice_once() {
        for (n, len) in [(0, 4), (1, 4), (10, 3), (64, 8), (65, 8)] {
            let mut v = vec![0usize; n];
            for_each_chunk(&mut v, len, |i, c| {
                assert!(c.len() <= len && !c.is_empty());
                c.iter_mut().for_each(|x| *x += i + 1);
            });
            let want: Vec<usize> = (0..n).map(|j| j / len + 1).collect();
            assert_eq!(v, want);
        }
    }

    #[test]
    fn every_task_runs_once() {
        for n in [0, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
            for_each(n, |i| {
                hits[i].fetch_add(1, SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(SeqCst) == 1), "n = {n}");
        }
    }

    #[test]
    fn loops_from_many_threads_and_nested_loops_all_finish() {
        let total = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        for_each(8, |_| {
                            for_each(3, |_| {
                                total.fetch_add(1, SeqCst);
                            })
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(SeqCst), 4 * 200 * 8 * 3);
    }

    #[test]
    fn a_panicking_task_panics_the_caller() {
        let ran = AtomicU64::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            for_each(64, |i| {
                ran.fetch_add(1, SeqCst);
                if i == 5 {
                    panic!("task 5");
                }
            })
        }));
        assert!(r.is_err());
        assert!(ran.load(SeqCst) >= 6);
        // The team, not only rayon, still takes loops afterwards: the panic poisoned its lock.
        if team().helpers > 0 {
            let on_team = (0..200).any(|_| {
                let names = Mutex::new(Vec::new());
                for_each(8, |_| {
                    std::thread::sleep(Duration::from_millis(1));
                    let name = std::thread::current().name().map(str::to_owned);
                    names.lock().unwrap().push(name);
                });
                let names = names.into_inner().unwrap();
                names.iter().flatten().any(|n| n.starts_with("kernel-team"))
            });
            assert!(on_team, "no loop ran on the team after a panic");
        }
        let after = AtomicU64::new(0);
        for_each(10, |_| {
            after.fetch_add(1, SeqCst);
        });
        assert_eq!(after.load(SeqCst), 10);
    }

    #[test]
    fn helpers_that_fell_asleep_wake_for_the_next_loop() {
        let total = AtomicU64::new(0);
        for _ in 0..3 {
            std::thread::sleep(SPIN * 3);
            for_each(16, |_| {
                total.fetch_add(1, SeqCst);
            });
        }
        assert_eq!(total.load(SeqCst), 48);
    }
}
