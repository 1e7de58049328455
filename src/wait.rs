//! Waiting for the GPU without blocking: wgpu error scopes, and buffer maps awaited as
//! futures.
//!
//! A buffer map completes when something calls `device.poll` after the GPU has
//! finished the work before it. In a browser the page's event loop does that. On native
//! targets each [`Context`](crate::Context) has a poller thread, started on the first
//! map it waits for, that blocks in `device.poll` while maps are outstanding and sleeps
//! on a condition variable otherwise; the map's callback wakes the future that awaits
//! it. So a host call's future returns `Poll::Pending` while the GPU works, and a
//! blocking caller (`pollster::block_on`) sleeps rather than spins.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};

use crate::error::{Error, Result};

/// Runs `f` inside out-of-memory, validation and internal error scopes and returns the
/// first error caught, for code that cannot await.
///
/// On native targets wgpu-core resolves a popped scope at once, so its future is ready
/// when first polled; nothing blocks. In a browser a popped scope resolves later, so
/// synchronous code pushes no scope there: errors reach the device's own handler, as
/// those of any wgpu call the app makes do. Host-path code, which can await, uses
/// [`scoped_async`] on every target.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn scoped<T>(device: &wgpu::Device, f: impl FnOnce() -> T) -> Result<T> {
    use futures::FutureExt;
    let (value, errors) = with_scopes(device, f);
    match errors.now_or_never() {
        Some(errors) => first_error(errors).map_or(Ok(value), Err),
        None => Err(Error::Internal(
            "a wgpu error scope did not resolve at once on a native backend".into(),
        )),
    }
}

/// See the native version: in a browser synchronous code pushes no error scope.
#[cfg(target_arch = "wasm32")]
pub(crate) fn scoped<T>(_device: &wgpu::Device, f: impl FnOnce() -> T) -> Result<T> {
    Ok(f())
}

/// Runs `f` inside out-of-memory, validation and internal error scopes, and awaits
/// them: the first error caught is returned.
pub(crate) async fn scoped_async<T>(device: &wgpu::Device, f: impl FnOnce() -> T) -> Result<T> {
    let (value, errors) = with_scopes(device, f);
    first_error(errors.await).map_or(Ok(value), Err)
}

type ScopeErrors = (
    Option<wgpu::Error>,
    Option<wgpu::Error>,
    Option<wgpu::Error>,
);

/// Pushes the three scopes, runs `f`, and pops them (innermost first). The scope guards
/// never outlive this function, so the returned future is `Send` where wgpu's are.
fn with_scopes<T>(
    device: &wgpu::Device,
    f: impl FnOnce() -> T,
) -> (T, impl Future<Output = ScopeErrors>) {
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
    let value = f();
    let internal = internal.pop();
    let validation = validation.pop();
    let oom = oom.pop();
    (value, async move {
        (internal.await, validation.await, oom.await)
    })
}

fn first_error(errors: ScopeErrors) -> Option<Error> {
    match errors {
        (None, None, None) => None,
        (_, _, Some(e)) | (_, Some(e), None) | (Some(e), None, None) => Some(Error::from_wgpu(e)),
    }
}

/// Returns `Pending` once (waking its task at once), then `Ready`: the host path yields
/// after submitting each chunk, so that one poll never does more than one chunk's work.
/// That matters where a backend runs the work inside `queue.submit` (wgpu's GL backend
/// on llvmpipe does): the future still hands control back between chunks.
pub(crate) async fn yield_now() {
    struct YieldNow(bool);
    impl Future for YieldNow {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
    YieldNow(false).await
}

type MapOutcome = std::result::Result<(), wgpu::BufferAsyncError>;

/// The outcome of one `map_async`, set by its callback.
#[derive(Default)]
struct Signal {
    state: Mutex<SignalState>,
}

#[derive(Default)]
struct SignalState {
    outcome: Option<MapOutcome>,
    waker: Option<Waker>,
}

impl Signal {
    fn set(&self, outcome: MapOutcome) {
        let waker = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.outcome = Some(outcome);
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn wake(&self) {
        let waker = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waker
            .take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn is_set(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .outcome
            .is_some()
    }
}

/// Starts mapping `range` of `buffer` for reading and returns the future of its
/// outcome. The `map_async` call itself runs in an error scope, as every wgpu call that
/// may fail does here.
pub(crate) fn map_read(
    device: &wgpu::Device,
    poller: &Poller,
    buffer: &wgpu::Buffer,
    range: impl std::ops::RangeBounds<wgpu::BufferAddress>,
    submission: wgpu::SubmissionIndex,
) -> Result<MapWait> {
    let signal = Arc::new(Signal::default());
    let callback_signal = signal.clone();
    scoped(device, || {
        buffer.map_async(wgpu::MapMode::Read, range, move |outcome| {
            callback_signal.set(outcome)
        })
    })?;
    Ok(MapWait::new(poller, signal, submission))
}

/// The future of a buffer map: `Ok(Ok(()))` once mapped, `Ok(Err(_))` where wgpu
/// reported a failed map, `Err(Timeout)` once the context's time-out has passed.
/// Dropping it leaves the map to complete (or fail) on its own; the poller stops
/// polling for it.
pub(crate) struct MapWait {
    signal: Arc<Signal>,
    #[cfg(not(target_arch = "wasm32"))]
    deadline: Option<std::time::Instant>,
    #[cfg(not(target_arch = "wasm32"))]
    timeout: std::time::Duration,
}

impl MapWait {
    #[cfg(not(target_arch = "wasm32"))]
    fn new(poller: &Poller, signal: Arc<Signal>, submission: wgpu::SubmissionIndex) -> Self {
        let deadline = std::time::Instant::now().checked_add(poller.timeout);
        poller.watch(&signal, submission, deadline);
        MapWait {
            signal,
            deadline,
            timeout: poller.timeout,
        }
    }

    #[cfg(target_arch = "wasm32")]
    fn new(_poller: &Poller, signal: Arc<Signal>, _submission: wgpu::SubmissionIndex) -> Self {
        MapWait { signal }
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn expired(&self) -> Option<Error> {
        self.deadline
            .is_some_and(|d| std::time::Instant::now() >= d)
            .then_some(Error::Timeout(self.timeout))
    }

    #[cfg(target_arch = "wasm32")]
    fn expired(&self) -> Option<Error> {
        None
    }
}

impl Future for MapWait {
    type Output = Result<MapOutcome>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut state = self.signal.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(outcome) = state.outcome.take() {
            return Poll::Ready(Ok(outcome));
        }
        if let Some(e) = self.expired() {
            return Poll::Ready(Err(e));
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Drives `device.poll` for a context's outstanding maps (native targets; a stand-in
/// in the browser, whose event loop does it).
pub(crate) struct Poller {
    #[cfg(not(target_arch = "wasm32"))]
    inner: Arc<native::Shared>,
    #[cfg(not(target_arch = "wasm32"))]
    timeout: std::time::Duration,
}

#[cfg(target_arch = "wasm32")]
impl Poller {
    pub(crate) fn new(_device: &wgpu::Device, _timeout: std::time::Duration) -> Self {
        Poller {}
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Poller {
    pub(crate) fn new(device: &wgpu::Device, timeout: std::time::Duration) -> Self {
        Poller {
            inner: Arc::new(native::Shared::new(device.clone())),
            timeout,
        }
    }

    fn watch(
        &self,
        signal: &Arc<Signal>,
        submission: wgpu::SubmissionIndex,
        deadline: Option<std::time::Instant>,
    ) {
        native::watch(&self.inner, signal, submission, deadline);
    }

    /// Whether the poller thread is running (for tests).
    #[allow(dead_code)]
    pub(crate) fn is_running(&self) -> bool {
        self.inner.is_running()
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Drop for Poller {
    /// Stops the poller thread and waits for it to leave the device (at most one poll
    /// slice): a process that exits right after dropping its context then never tears
    /// down the driver under a thread still inside it (seen as a heap corruption at exit
    /// of the command-line tool on llvmpipe GL).
    fn drop(&mut self) {
        self.inner.shut_down();
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::Signal;
    use std::sync::{Arc, Condvar, Mutex, Weak};
    use std::time::{Duration, Instant};

    /// The longest single `device.poll` wait, so that deadlines and shutdown are seen.
    const POLL_SLICE: Duration = Duration::from_millis(250);

    struct Watched {
        signal: Weak<Signal>,
        submission: wgpu::SubmissionIndex,
        deadline: Option<Instant>,
    }

    #[derive(Default)]
    struct State {
        watched: Vec<Watched>,
        running: bool,
        shut_down: bool,
        /// The poller thread, while it may be running.
        thread: Option<std::thread::JoinHandle<()>>,
    }

    pub(super) struct Shared {
        device: wgpu::Device,
        state: Mutex<State>,
        work: Condvar,
    }

    impl Shared {
        pub(super) fn new(device: wgpu::Device) -> Self {
            Shared {
                device,
                state: Mutex::new(State::default()),
                work: Condvar::new(),
            }
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|p| p.into_inner())
        }

        pub(super) fn is_running(&self) -> bool {
            self.lock().running
        }

        /// Tells the poller thread to stop, and waits for it (unless called on it).
        pub(super) fn shut_down(&self) {
            let thread = {
                let mut state = self.lock();
                state.shut_down = true;
                state.thread.take()
            };
            self.work.notify_all();
            if let Some(t) = thread {
                if t.thread().id() != std::thread::current().id() {
                    let _ = t.join();
                }
            }
        }
    }

    /// Adds a map to the poller's list and starts its thread if it is not running.
    pub(super) fn watch(
        shared: &Arc<Shared>,
        signal: &Arc<Signal>,
        submission: wgpu::SubmissionIndex,
        deadline: Option<Instant>,
    ) {
        let mut state = shared.lock();
        state.watched.push(Watched {
            signal: Arc::downgrade(signal),
            submission,
            deadline,
        });
        if !state.running && !state.shut_down {
            let thread_shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name("wgpu-softmax poller".into())
                .spawn(move || run(&thread_shared));
            // Without a thread (none can be spawned), the future still ends at its
            // deadline; a map completes whenever anything else polls the device.
            state.running = spawned.is_ok();
            state.thread = spawned.ok();
        }
        drop(state);
        shared.work.notify_all();
    }

    /// The poller thread: while any watched map is outstanding, wait (in slices) for
    /// the oldest one's submission, which fires the callbacks of everything finished;
    /// wake the futures whose deadline has passed; sleep when nothing is watched.
    fn run(shared: &Shared) {
        loop {
            let (submission, slice) = {
                let mut state = shared.lock();
                loop {
                    if state.shut_down {
                        state.running = false;
                        return;
                    }
                    let now = Instant::now();
                    state.watched.retain(|w| match w.signal.upgrade() {
                        Some(signal) if signal.is_set() => false,
                        Some(signal) if w.deadline.is_some_and(|d| now >= d) => {
                            signal.wake();
                            false
                        }
                        Some(_) => true,
                        None => false,
                    });
                    if let Some(first) = state.watched.first() {
                        let to_deadline = state
                            .watched
                            .iter()
                            .filter_map(|w| w.deadline)
                            .min()
                            .map_or(POLL_SLICE, |d| d.saturating_duration_since(now));
                        break (first.submission.clone(), to_deadline.min(POLL_SLICE));
                    }
                    state = shared.work.wait(state).unwrap_or_else(|p| p.into_inner());
                }
            };
            // A time-out only ends this slice; any other error (a lost device) fails
            // the maps through their callbacks, and the loop checks again.
            let polled = shared.device.poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: Some(slice.max(Duration::from_millis(1))),
            });
            if let Err(e) = polled {
                if !matches!(e, wgpu::PollError::Timeout) {
                    // Avoid spinning on a device that fails every poll.
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}
