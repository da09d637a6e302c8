//! A spinning thread pool for the products of a forward pass.
//!
//! A forward pass runs hundreds of short parallel sections per token (every matrix product,
//! attention), with short serial steps between them (norms, RoPE). rayon's idle workers go to
//! sleep between sections, and on a virtual machine waking a halted vCPU costs tens of
//! microseconds per section; ggml keeps its threads spinning for the whole graph instead. While
//! [`hot`] runs, [`for_each`] hands its tasks to such a pool: workers poll one atomic counter
//! (and sleep only after [`GRACE`] without work), the calling thread takes tasks too, and tasks
//! are claimed one at a time from that counter, so a slow thread does not hold the others up.
//! Outside [`hot`] (tests, benchmarks, other callers), [`for_each`] is rayon's
//! `into_par_iter().for_each`.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rayon::prelude::*;

/// How long an idle worker spins before it sleeps (it keeps spinning across the sampling
/// between two decoded tokens).
pub const GRACE: Duration = Duration::from_millis(5);

/// Bits of the job counter: `gen` (which job) | `n` (its task count) | `idx` (next task).
const IDX_BITS: u32 = 22;
const N_BITS: u32 = 22;
const MAX_TASKS: usize = (1 << (IDX_BITS - 1)) - 1;
const MASK: u64 = (1 << IDX_BITS) - 1;

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// `gen << 44 | n << 22 | idx`: a worker's `fetch_add(1)` claims task `idx` of job `gen`
    /// and learns `n` in the same step, so it never runs a task of a job it did not see.
    counter: AtomicU64,
    /// The current job's closure (lifetime erased; valid until its `n` tasks are done).
    job: Mutex<Option<SendJob>>,
    /// Tasks of the current job finished.
    done: AtomicUsize,
    /// A task of the current job panicked.
    panicked: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
}

#[derive(Clone, Copy)]
struct SendJob(Job);
// SAFETY: the closure is `Sync` and only called while the dispatching `run` waits for it.
unsafe impl Send for SendJob {}

/// A pool of `threads - 1` spinning workers (the caller is the last thread).
pub struct Pool {
    shared: Arc<Shared>,
    threads: usize,
    workers: Vec<std::thread::JoinHandle<()>>,
    /// One dispatcher at a time.
    dispatch: Mutex<()>,
}

thread_local! {
    /// The pool [`hot`] made current on this thread.
    static HOT: RefCell<Option<Arc<Pool>>> = const { RefCell::new(None) };
    /// Set while this thread runs a pool task (a nested [`for_each`] runs in place).
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

fn split(c: u64) -> (u64, usize, usize) {
    (
        c >> (IDX_BITS + N_BITS),
        ((c >> IDX_BITS) & ((1 << N_BITS) - 1)) as usize,
        (c & MASK) as usize,
    )
}

impl Pool {
    fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            counter: AtomicU64::new(0),
            job: Mutex::new(None),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let workers = (1..threads)
            .map(|i| {
                let sh = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("slmpack-spin-{i}"))
                    .spawn(move || worker(&sh))
                    .expect("spawn a pool thread")
            })
            .collect();
        Pool {
            shared,
            threads,
            workers,
            dispatch: Mutex::new(()),
        }
    }

    /// Runs `f(i)` for `i < n` on every thread of the pool, the caller included; returns when
    /// all are done.
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        assert!(n <= MAX_TASKS, "{n} tasks is more than the pool takes");
        let _one = self.dispatch.lock().unwrap_or_else(|e| e.into_inner());
        let sh = &*self.shared;
        // SAFETY (of the erased lifetime): `run` returns only after all `n` tasks are done, and
        // a worker calls the closure only for a task it claimed below `n`.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        *sh.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(SendJob(job));
        sh.done.store(0, Ordering::Relaxed);
        let (gen, _, _) = split(sh.counter.load(Ordering::Relaxed));
        let next = ((gen + 1) & ((1 << 20) - 1)) << (IDX_BITS + N_BITS) | (n as u64) << IDX_BITS;
        sh.counter.store(next, Ordering::SeqCst);
        if sh.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.wake.notify_all();
        }
        IN_TASK.with(|t| t.set(true));
        claim_all(sh, f);
        IN_TASK.with(|t| t.set(false));
        while sh.done.load(Ordering::Acquire) < n {
            std::hint::spin_loop();
        }
        if sh.panicked.swap(false, Ordering::Relaxed) {
            panic!("a parallel task panicked");
        }
    }
}

/// Claims and runs tasks of the job in the counter until none is left.
fn claim_all(sh: &Shared, f: &(dyn Fn(usize) + Sync)) {
    loop {
        let (_, n, i) = split(sh.counter.fetch_add(1, Ordering::AcqRel));
        if i >= n {
            return;
        }
        run_task(sh, f, i);
    }
}

/// Task `i`, counted done even if it panics (the dispatcher then panics).
fn run_task(sh: &Shared, f: &(dyn Fn(usize) + Sync), i: usize) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(i))).is_err() {
        sh.panicked.store(true, Ordering::Relaxed);
    }
    sh.done.fetch_add(1, Ordering::Release);
}

fn worker(sh: &Shared) {
    // generation 0 is the counter before any job: a job published before this thread got
    // here (the pool's first) is one it has not seen, and it takes its share of it
    let mut seen = 0;
    IN_TASK.with(|t| t.set(true));
    loop {
        let mut idle = Instant::now();
        let mut spins = 0u32;
        loop {
            let (gen, n, i) = split(sh.counter.load(Ordering::Acquire));
            if gen != seen && i < n {
                break;
            }
            seen = gen;
            if sh.stop.load(Ordering::Relaxed) {
                return;
            }
            spins += 1;
            if !spins.is_multiple_of(1024) || idle.elapsed() < GRACE {
                std::hint::spin_loop();
                continue;
            }
            sh.sleepers.fetch_add(1, Ordering::SeqCst);
            let mut g = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            while split(sh.counter.load(Ordering::SeqCst)).0 == seen
                && !sh.stop.load(Ordering::SeqCst)
            {
                g = sh.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            drop(g);
            sh.sleepers.fetch_sub(1, Ordering::SeqCst);
            idle = Instant::now();
        }
        loop {
            let (gen, n, i) = split(sh.counter.fetch_add(1, Ordering::AcqRel));
            seen = gen;
            if i >= n {
                break;
            }
            // a claimed task keeps its job alive until `done` counts it
            let job = sh
                .job
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .expect("a job is set before its tasks");
            // SAFETY: see `Pool::run`
            run_task(sh, unsafe { &*job.0 }, i);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The process's pool for a thread count, made on first use (one at a time is kept).
fn pool_for(threads: usize) -> Arc<Pool> {
    static POOL: OnceLock<Mutex<Option<Arc<Pool>>>> = OnceLock::new();
    let mut p = POOL
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    match &*p {
        Some(pool) if pool.threads == threads => Arc::clone(pool),
        _ => {
            let pool = Arc::new(Pool::new(threads));
            *p = Some(Arc::clone(&pool));
            pool
        }
    }
}

/// Runs `body` with a spinning pool of `rayon::current_num_threads()` threads current on this
/// thread, so the [`for_each`] calls inside it (from this thread) use it. Nested calls reuse it.
pub fn hot<R>(body: impl FnOnce() -> R) -> R {
    let threads = rayon::current_num_threads().max(1);
    if threads == 1 || HOT.with(|h| h.borrow().is_some()) || IN_TASK.with(|t| t.get()) {
        return body();
    }
    let pool = pool_for(threads);
    HOT.with(|h| *h.borrow_mut() = Some(pool));
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            HOT.with(|h| *h.borrow_mut() = None);
        }
    }
    let _reset = Reset;
    body()
}

/// The number of threads [`for_each`] spreads tasks over here.
pub fn threads() -> usize {
    HOT.with(|h| h.borrow().as_ref().map(|p| p.threads))
        .unwrap_or_else(rayon::current_num_threads)
}

/// `f(i)` for every `i < n`, in parallel: on the pool of [`hot`] if one is current on this
/// thread, in place inside one of its tasks, else on rayon.
pub fn for_each(n: usize, f: impl Fn(usize) + Sync + Send) {
    if n == 0 {
        return;
    }
    if n == 1 || IN_TASK.with(|t| t.get()) {
        (0..n).for_each(f);
        return;
    }
    let pool = HOT.with(|h| h.borrow().clone());
    match pool {
        Some(p) if n <= MAX_TASKS => p.run(n, &f),
        _ => (0..n).into_par_iter().for_each(f),
    }
}

/// At most this many shares in [`for_each_share`] (threads past this many sit its sections out).
const MAX_SHARES: usize = 64;

/// One share's remaining pieces `[front, back)`, `back << 32 | front`, alone on its cache line.
#[repr(align(64))]
struct Cursor(AtomicU64);

impl Cursor {
    /// Claims the front piece (`front == true`, the share's own thread) or the back one (a
    /// thread done with its own share); `None` once the share is used up.
    fn claim(&self, front: bool) -> Option<usize> {
        let mut c = self.0.load(Ordering::Relaxed);
        loop {
            let (fr, bk) = (c & 0xffff_ffff, c >> 32);
            if fr >= bk {
                return None;
            }
            let (next, piece) = if front {
                (c + 1, fr)
            } else {
                (c - (1 << 32), bk - 1)
            };
            match self
                .0
                .compare_exchange_weak(c, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(piece as usize),
                Err(now) => c = now,
            }
        }
    }
}

/// `f(lo, hi)` over `0..n` in pieces of at most `piece` items, in parallel with [`for_each`]:
/// one contiguous share of pieces per thread, which its thread walks front to back (one run of
/// memory the hardware prefetcher follows, as ggml splits a matrix-vector product), and a thread
/// done with its own share takes the pieces left at the back of the others'. So a thread that
/// falls behind (a vCPU the host paused, a slower memory stream) does not hold the others up
/// at the end of the section. Each piece runs exactly once; no allocation.
pub fn for_each_share(n: usize, piece: usize, f: impl Fn(usize, usize) + Sync + Send) {
    // piece indices live in 32 bits of a cursor
    let piece = piece.max(1).max(n.div_ceil(u32::MAX as usize));
    let pieces = n.div_ceil(piece);
    let shares = threads().clamp(1, MAX_SHARES).min(pieces);
    if shares <= 1 || IN_TASK.with(|t| t.get()) {
        if n > 0 {
            f(0, n);
        }
        return;
    }
    let cursors: [Cursor; MAX_SHARES] = std::array::from_fn(|s| {
        let (fr, bk) = (pieces * s / shares, pieces * (s + 1) / shares);
        Cursor(AtomicU64::new(((bk as u64) << 32) | fr as u64))
    });
    let run = |p: usize| f(p * piece, ((p + 1) * piece).min(n));
    for_each(shares, |s| {
        while let Some(p) = cursors[s].claim(true) {
            run(p);
        }
        for o in (1..shares).map(|k| (s + k) % shares) {
            while let Some(p) = cursors[o].claim(false) {
                run(p);
            }
        }
    });
}

/// `f(i, row)` for each of the `data.len() / len` rows of `len` elements of `data`, in
/// parallel with [`for_each`], `per` rows a task.
pub fn for_each_row<T: Send>(
    data: &mut [T],
    len: usize,
    per: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if len == 0 {
        return;
    }
    let n = data.len() / len;
    let per = per.max(1);
    let p = SharedMut(data.as_mut_ptr());
    for_each(n.div_ceil(per), |task| {
        for i in task * per..((task + 1) * per).min(n) {
            // SAFETY: row i is inside `data` (i < n) and belongs to this task only
            f(i, unsafe {
                std::slice::from_raw_parts_mut(p.at(i * len), len)
            });
        }
    });
}

/// `f(i, q_row, d_row, c_row)` for the rows of three buffers (`q`: rows of `lq`, `d` of `ld`,
/// `c` of `lc`, as many as `q` has), in parallel with [`for_each`], `per` rows a task.
pub(crate) fn for_each_row3<Q: Send, D: Send, C: Send>(
    (q, lq): (&mut [Q], usize),
    (d, ld): (&mut [D], usize),
    (c, lc): (&mut [C], usize),
    per: usize,
    f: impl Fn(usize, &mut [Q], &mut [D], &mut [C]) + Sync + Send,
) {
    if lq == 0 {
        return;
    }
    let n = q.len() / lq;
    assert!(
        d.len() >= n * ld && c.len() >= n * lc,
        "buffers too short for {n} rows"
    );
    let per = per.max(1);
    let (pq, pd, pc) = (
        SharedMut(q.as_mut_ptr()),
        SharedMut(d.as_mut_ptr()),
        SharedMut(c.as_mut_ptr()),
    );
    for_each(n.div_ceil(per), |task| {
        for i in task * per..((task + 1) * per).min(n) {
            // SAFETY: row i of each buffer is inside it and belongs to this task only
            unsafe {
                f(
                    i,
                    std::slice::from_raw_parts_mut(pq.at(i * lq), lq),
                    std::slice::from_raw_parts_mut(pd.at(i * ld), ld),
                    std::slice::from_raw_parts_mut(pc.at(i * lc), lc),
                )
            };
        }
    });
}

/// `f(i, a_row, b_row)` for the rows of two buffers at once (`data_a` rows of `len_a`,
/// `data_b` rows of `len_b`, as many as `data_a` has), in parallel with [`for_each`].
pub fn for_each_row2<A: Send, B: Send>(
    a: (&mut [A], usize),
    b: (&mut [B], usize),
    per: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync + Send,
) {
    let ((da, la), (db, lb)) = (a, b);
    if la == 0 {
        return;
    }
    let n = da.len() / la;
    assert!(db.len() >= n * lb, "second buffer too short for {n} rows");
    let per = per.max(1);
    let (pa, pb) = (SharedMut(da.as_mut_ptr()), SharedMut(db.as_mut_ptr()));
    for_each(n.div_ceil(per), |task| {
        for i in task * per..((task + 1) * per).min(n) {
            // SAFETY: row i of each buffer is inside it and belongs to this task only
            let (ra, rb) = unsafe {
                (
                    std::slice::from_raw_parts_mut(pa.at(i * la), la),
                    std::slice::from_raw_parts_mut(pb.at(i * lb), lb),
                )
            };
            f(i, ra, rb);
        }
    });
}

/// A buffer's base pointer shared by parallel tasks that each write their own elements of it
/// (output rows, attention heads).
pub struct SharedMut<T>(pub *mut T);
impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<T> {}
// SAFETY: the tasks write disjoint elements, and the buffer's borrow outlives the parallel
// section (the contract of every `unsafe` write through `at`).
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}
impl<T> SharedMut<T> {
    /// Element `i`'s address (a method, so closures capture the whole `Sync` wrapper).
    #[inline]
    pub fn at(self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_on_the_pool() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            hot(|| {
                for n in [1usize, 2, 3, 17, 1000] {
                    for _ in 0..50 {
                        let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                        for_each(n, |i| {
                            // a nested call runs in place
                            for_each(2, |_| {});
                            hits[i].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "n={n}");
                    }
                }
                // after the workers went to sleep
                std::thread::sleep(GRACE * 3);
                let hits: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
                for_each(64, |i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            })
        });
    }

    /// Counts this task as started and waits (up to 10 s) until two have: two tasks on one
    /// thread cannot both get past this, so they only meet on two threads.
    fn meet(started: &AtomicUsize) {
        started.fetch_add(1, Ordering::SeqCst);
        let t0 = Instant::now();
        while started.load(Ordering::SeqCst) < 2 && t0.elapsed() < Duration::from_secs(10) {
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_sleeping_worker_is_woken_for_every_job() {
        // a job published while the worker goes to sleep must wake it: the caller's task waits
        // (up to 10 s) for the other one to start on another thread
        let pool = Pool::new(2);
        for round in 0..100 {
            // past GRACE the worker sleeps; short pauses catch it on its way to sleep
            std::thread::sleep(if round % 2 == 0 { GRACE * 2 } else { GRACE });
            let started = AtomicUsize::new(0);
            let ids: Vec<Mutex<Option<std::thread::ThreadId>>> =
                (0..2).map(|_| Mutex::new(None)).collect();
            pool.run(2, &|i| {
                *ids[i].lock().unwrap() = Some(std::thread::current().id());
                meet(&started);
            });
            let (a, b) = (*ids[0].lock().unwrap(), *ids[1].lock().unwrap());
            assert!(a != b, "round {round}: the sleeping worker missed the job");
        }
    }

    #[test]
    fn a_new_pools_first_job_runs_on_every_thread() {
        // its worker may start after the job is published, and must still take a task of it
        for _ in 0..3 {
            let pool = Pool::new(2);
            let ran: Vec<Mutex<Option<std::thread::ThreadId>>> =
                (0..2).map(|_| Mutex::new(None)).collect();
            let started = AtomicUsize::new(0);
            pool.run(2, &|i| {
                *ran[i].lock().unwrap() = Some(std::thread::current().id());
                meet(&started);
            });
            let (a, b) = (*ran[0].lock().unwrap(), *ran[1].lock().unwrap());
            assert!(a.is_some() && a != b, "{a:?} {b:?}");
        }
    }

    #[test]
    fn shares_cover_every_item_once_and_a_slow_share_is_taken_over() {
        for threads in [1usize, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                hot(|| {
                    for (n, piece) in [(0usize, 4usize), (1, 4), (7, 1), (100, 7), (1000, 16)] {
                        let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                        for_each_share(n, piece, |lo, hi| {
                            assert!(lo < hi && hi <= n, "{lo}..{hi} of {n}");
                            assert!(hi - lo <= piece || threads == 1, "{lo}..{hi}");
                            for h in &hits[lo..hi] {
                                h.fetch_add(1, Ordering::Relaxed);
                            }
                        });
                        assert!(
                            hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                            "n={n} piece={piece} threads={threads}"
                        );
                    }
                    if threads == 1 {
                        return;
                    }
                    // whichever thread runs piece 0 stalls in it until the other 63 pieces
                    // are done, or 30 s pass. The other threads must take over what is left of
                    // the stalled thread's share (its back pieces), so the stall ends well before
                    // the 30 s. (Which thread runs piece 0 is up to the scheduler: a share's
                    // thread that starts late, as under QEMU, may find its whole share taken,
                    // piece 0 included; then the stall ends at once.)
                    let done = AtomicUsize::new(0);
                    let timed_out = AtomicBool::new(false);
                    let t0 = std::time::Instant::now();
                    for_each_share(64, 1, |lo, _| {
                        if lo == 0 {
                            while done.load(Ordering::Acquire) < 63 {
                                if t0.elapsed() > Duration::from_secs(30) {
                                    timed_out.store(true, Ordering::Relaxed);
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                        done.fetch_add(1, Ordering::Release);
                    });
                    assert!(
                        !timed_out.load(Ordering::Relaxed),
                        "the stalled share's pieces were not taken over (threads={threads})"
                    );
                })
            });
        }
    }
}
