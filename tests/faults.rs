//! Faults and stress: many threads on one context, many calls on one context (no growth
//! of pooled buffers or memory), a device destroyed under the library, and a GPU slower
//! than the time-out. Every wait is bounded by a watchdog, so a hang fails the test
//! instead of stalling the run.
//!
//! The input-is-never-modified check of the resident API is not repeated here:
//! `tests/resident.rs` (`guard_case`) reads the input buffer back after every case.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::{app_device, check_output, ctx, normal_matrix, softmax, Rng};
use wgpu_softmax::wgpu;
use wgpu_softmax::{
    block_on, Context, ContextOptions, Error, MatrixView, Options, RowInputs, Shape,
};

/// The tests of this file run one at a time: the memory test reads the whole process's
/// resident set, and the fault tests time things; neither wants the others running.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` on its own thread and waits at most `limit` for its result. A hang fails the
/// test (the stuck thread is left behind); a panic in `f` is re-raised here.
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = thread::Builder::new()
        .name(what.to_string())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn");
    match rx.recv_timeout(limit) {
        Ok(value) => {
            worker.join().expect("worker");
            value
        }
        Err(RecvTimeoutError::Timeout) => {
            panic!("{what}: no result within {limit:?}: deadlock or hang")
        }
        Err(RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker ended without sending"),
        },
    }
}

/// The process's resident set in bytes (`/proc/self/statm`, second field, 4 KiB pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm's second field");
    pages * 4096
}

const MIB: f64 = (1 << 20) as f64;

/// The error's variant name, for the report.
fn variant(e: &Error) -> &'static str {
    match e {
        Error::NoAdapter(_) => "NoAdapter",
        Error::RequestDevice(_) => "RequestDevice",
        Error::ShapeMismatch { .. } => "ShapeMismatch",
        Error::ShapeOverflow { .. } => "ShapeOverflow",
        Error::InputLength { .. } => "InputLength",
        Error::InvalidTemperature(_) => "InvalidTemperature",
        Error::InvalidStride { .. } => "InvalidStride",
        Error::Misaligned { .. } => "Misaligned",
        Error::BufferTooSmall { .. } => "BufferTooSmall",
        Error::MissingUsage { .. } => "MissingUsage",
        Error::PartialOverlap => "PartialOverlap",
        Error::BufferDestroyed { .. } => "BufferDestroyed",
        Error::RegionOverlap { .. } => "RegionOverlap",
        Error::RowTooLong { .. } => "RowTooLong",
        Error::Unsupported(_) => "Unsupported",
        Error::Validation(_) => "Validation",
        Error::OutOfMemory(_) => "OutOfMemory",
        Error::Internal(_) => "Internal",
        Error::Map(_) => "Map",
        Error::Timeout(_) => "Timeout",
        Error::DeviceLost(_) => "DeviceLost",
        _ => "(unknown variant)",
    }
}

/// The errors a call on a destroyed device may give: GPU-side failures, not argument
/// errors (the arguments are fine) and never a time-out of the full default length.
fn is_gpu_failure(e: &Error) -> bool {
    matches!(
        e,
        Error::Validation(_)
            | Error::OutOfMemory(_)
            | Error::Internal(_)
            | Error::Map(_)
            | Error::DeviceLost(_)
            | Error::Timeout(_)
    )
}

/// The app's own device (`common::app_device`, WebGPU's default limits), with an
/// uncaptured-error handler and a device-lost callback that only record (so wgpu's
/// default handler, which panics, cannot hide or cause a failure).
struct AppDevice {
    device: wgpu::Device,
    queue: wgpu::Queue,
    uncaptured: Arc<Mutex<Vec<String>>>,
    lost: Arc<Mutex<Vec<String>>>,
}

impl AppDevice {
    fn new() -> Self {
        let (device, queue) = app_device(wgpu::Limits::default());
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.to_string());
        }));
        let lost = Arc::new(Mutex::new(Vec::new()));
        let sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{reason:?}: {message}"));
        });
        AppDevice {
            device,
            queue,
            uncaptured,
            lost,
        }
    }

    fn report(&self, what: &str) {
        let uncaptured = self.uncaptured.lock().unwrap_or_else(|p| p.into_inner());
        let lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        eprintln!(
            "{what}: device-lost callback {:?}; {} uncaptured error(s){}",
            *lost,
            uncaptured.len(),
            uncaptured
                .first()
                .map(|e| format!(", first: {}", one_line(e)))
                .unwrap_or_default()
        );
    }
}

fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 300 {
        format!("{}...", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

#[test]
fn eight_threads_share_one_context() {
    let ctx = ctx();
    let _serial = serial();
    const THREADS: usize = 8;
    const CALLS: usize = 100;
    const COLS: [usize; 6] = [1, 7, 33, 100, 1000, 4100];
    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    let start = Instant::now();
    within(Duration::from_secs(300), "eight threads", move || {
        thread::scope(|s| {
            for t in 0..THREADS {
                let counter = &counter;
                s.spawn(move || {
                    let mut rng = Rng::new(1000 + t as u64);
                    for call in 0..CALLS {
                        let rows = 1 + rng.below(40);
                        let cols = COLS[rng.below(COLS.len())];
                        let shape = Shape::new(rows, cols);
                        let mut options = if rng.below(2) == 0 {
                            Options::softmax()
                        } else {
                            Options::log_softmax()
                        };
                        if rng.below(2) == 0 {
                            options = options.with_temperature(2.0);
                        }
                        let x = normal_matrix(rng.next_u64(), rows * cols, 3.0);
                        let y = softmax(ctx, &x, shape, &options).unwrap_or_else(|e| {
                            panic!("thread {t} call {call} {shape:?} {options:?}: {e}")
                        });
                        check_output(&y, &x, shape, &options);
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
    });
    assert_eq!(done.load(Ordering::Relaxed), THREADS * CALLS);
    eprintln!(
        "{THREADS} threads x {CALLS} calls on one context: {:.2?}; staging bytes pooled \
         afterwards: {}",
        start.elapsed(),
        ctx.staging_bytes()
    );
}

#[test]
fn ten_thousand_calls_keep_buffers_and_memory_flat() {
    let _serial = serial();
    const CALLS: usize = 10_000;
    // Small shapes (rows * cols <= 4096) so that 10,000 calls take seconds on a software
    // adapter (about 3.5 s on lavapipe and llvmpipe), from one element to 4096 per row.
    const SHAPES: [(usize, usize); 8] = [
        (1, 1),
        (3, 7),
        (8, 33),
        (16, 100),
        (4, 1000),
        (1, 4096),
        (32, 128),
        (2, 2048),
    ];
    let ctx = block_on(Context::new(ContextOptions::default())).expect("context");
    let inputs: Vec<Vec<f32>> = SHAPES
        .iter()
        .enumerate()
        .map(|(i, &(r, c))| normal_matrix(500 + i as u64, r * c, 3.0))
        .collect();
    let mut staging_at_100 = 0;
    let mut rss_at_1000 = 0;
    let start = Instant::now();
    for call in 0..CALLS {
        let k = call % SHAPES.len();
        let shape = Shape::new(SHAPES[k].0, SHAPES[k].1);
        let options = match (call / SHAPES.len()) % 3 {
            0 => Options::softmax(),
            1 => Options::log_softmax(),
            _ => Options::softmax().with_temperature(2.0),
        };
        let y = softmax(&ctx, &inputs[k], shape, &options)
            .unwrap_or_else(|e| panic!("call {call} {shape:?}: {e}"));
        // Checking every result keeps the test honest; it costs little at these sizes.
        check_output(&y, &inputs[k], shape, &options);
        match call + 1 {
            100 => staging_at_100 = ctx.staging_bytes(),
            1000 => rss_at_1000 = rss_bytes(),
            _ => {}
        }
    }
    let elapsed = start.elapsed();
    let staging_at_end = ctx.staging_bytes();
    let rss_at_end = rss_bytes();
    let growth = rss_at_end as f64 - rss_at_1000 as f64;
    eprintln!(
        "{CALLS} host calls: {elapsed:.2?} ({:.0} us per call); staging bytes after 100 \
         calls: {staging_at_100}, after {CALLS}: {staging_at_end}; RSS after 1,000 calls: \
         {:.1} MiB, after {CALLS}: {:.1} MiB, growth {:.0} KiB",
        elapsed.as_secs_f64() * 1e6 / CALLS as f64,
        rss_at_1000 as f64 / MIB,
        rss_at_end as f64 / MIB,
        growth / 1024.0,
    );
    assert_eq!(
        staging_at_100, staging_at_end,
        "the staging pool grew between call 100 and call {CALLS}"
    );
    // Each call allocates a uniform buffer and bind groups and (before the pool is warm)
    // staging buffers. A leak of 2 KiB per call over the last 9,000 calls would be
    // 17.6 MiB; 16 MiB leaves room for allocator and driver caches (the measured growth
    // is 0 KiB on lavapipe and on llvmpipe) while catching anything that grows with the
    // call count.
    let bound = 16.0 * MIB;
    assert!(
        growth < bound,
        "resident memory grew by {:.1} MiB between call 1,000 and call {CALLS}",
        growth / MIB
    );
}

/// One good call, then `destroy`, then calls that must each fail soon, without a panic:
/// the same shape (pooled staging slot, cached pipeline), a new one (new buffers, a
/// pipeline never built), the first again.
fn calls_after_destroy(ctx: Arc<Context>, destroy: impl FnOnce(), what: &str) {
    let shape = Shape::new(8, 1000);
    let x = Arc::new(normal_matrix(7, shape.rows * shape.cols, 3.0));
    let y = softmax(&ctx, &x, shape, &Options::softmax())
        .expect("a call before the device is destroyed");
    check_output(&y, &x, shape, &Options::softmax());
    destroy();
    for (i, (shape, options)) in [
        (shape, Options::softmax()),
        (Shape::new(3, 70_000), Options::log_softmax()),
        (shape, Options::softmax()),
    ]
    .into_iter()
    .enumerate()
    {
        let input = if shape.rows * shape.cols == x.len() {
            x.clone()
        } else {
            Arc::new(normal_matrix(8, shape.rows * shape.cols, 3.0))
        };
        let ctx = ctx.clone();
        let started = Instant::now();
        let result = within(
            Duration::from_secs(60),
            "a call on a destroyed device",
            move || softmax(&ctx, &input, shape, &options),
        );
        match result {
            Ok(_) => panic!("{what}: call {i} {shape:?} on a destroyed device returned Ok"),
            Err(e) => {
                eprintln!(
                    "{what}, call {i} {shape:?}: Err({}) after {:.2?}: {}",
                    variant(&e),
                    started.elapsed(),
                    one_line(&e.to_string())
                );
                assert!(is_gpu_failure(&e), "{what}: unexpected error {e:?}");
            }
        }
    }
}

#[test]
fn a_destroyed_device_gives_an_error_not_a_hang_or_panic() {
    let _serial = serial();
    // The app's device, wrapped.
    let app = AppDevice::new();
    let ctx = Arc::new(
        Context::from_device(&app.device, &app.queue, ContextOptions::default()).expect("context"),
    );
    calls_after_destroy(ctx, || app.device.destroy(), "app's device destroyed");
    app.report("app's device destroyed");
    // The context's own device (which has the library's device-lost callback).
    let ctx = Arc::new(block_on(Context::new(ContextOptions::default())).expect("context"));
    let device = ctx.device().clone();
    calls_after_destroy(ctx, || device.destroy(), "context's own device destroyed");
}

#[test]
fn encoding_on_a_destroyed_device_gives_an_error_not_a_panic() {
    let _serial = serial();
    let app = AppDevice::new();
    let ctx =
        Context::from_device(&app.device, &app.queue, ContextOptions::default()).expect("context");
    let shape = Shape::new(4, 300);
    let buffer = app.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("test matrix"),
        size: (shape.rows * shape.cols * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let view = MatrixView::new(&buffer);
    let mut encoder = app.device.create_command_encoder(&Default::default());
    ctx.encode(
        &mut encoder,
        view,
        view,
        shape,
        &Options::softmax(),
        &RowInputs::NONE,
    )
    .expect("encode before the device is destroyed");
    app.queue.submit([encoder.finish()]);
    app.device.destroy();
    // The same call again (its pipeline and bindings are cached), then one never made
    // before (a new pipeline, new bindings). The new call must fail. The repeated one
    // makes no wgpu call that checks the device, and wgpu gives error scopes no error
    // for a destroyed device (it reports the loss through the device-lost callback,
    // which a `from_device` context leaves to the app): it records, and wgpu drops the
    // submission without a word. That is the documented behaviour (README, "Limits and
    // faults"); this pins it, with no panic and nothing sent to the app's handler.
    let mut outcomes = Vec::new();
    for (what, shape, options) in [
        ("the same call again", shape, Options::softmax()),
        ("a new call", Shape::new(2, 100), Options::log_softmax()),
    ] {
        let mut encoder = app.device.create_command_encoder(&Default::default());
        let result = ctx.encode(&mut encoder, view, view, shape, &options, &RowInputs::NONE);
        match &result {
            Ok(()) => eprintln!("encode on a destroyed device, {what}: Ok"),
            Err(e) => eprintln!(
                "encode on a destroyed device, {what}: Err({}): {}",
                variant(e),
                one_line(&e.to_string())
            ),
        }
        if result.is_ok() {
            app.queue.submit([encoder.finish()]);
        }
        outcomes.push((what, result));
    }
    app.report("encode on a destroyed device");
    let uncaptured = app
        .uncaptured
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert!(
        uncaptured.is_empty(),
        "errors sent to the app's handler: {uncaptured:?}"
    );
    let mut outcomes = outcomes.into_iter();
    let (_, repeated) = outcomes.next().expect("the repeated call");
    assert_eq!(repeated, Ok(()), "the repeated call on a destroyed device");
    let (what, new_call) = outcomes.next().expect("the new call");
    match new_call {
        Ok(()) => panic!("encode on a destroyed device, {what}: Ok, not an error"),
        Err(e) => assert!(is_gpu_failure(&e), "{what}: unexpected error {e:?}"),
    }
}

#[test]
fn a_device_destroyed_during_a_streaming_call_gives_ok_or_an_error_not_a_hang_or_panic() {
    let _serial = serial();
    // 64 rows of 200,000 (51 MB) in chunks of one row: 64 chunks, two in flight.
    let shape = Shape::new(64, 200_000);
    let x = Arc::new(normal_matrix(9, shape.rows * shape.cols, 3.0));
    let options = Options::softmax();
    let streaming_context = || {
        let app = AppDevice::new();
        let o = ContextOptions::default().with_host_chunk_bytes(shape.cols as u64 * 4);
        let ctx = Arc::new(Context::from_device(&app.device, &app.queue, o).expect("context"));
        // Build the pipelines first, so that the destroy lands in the streaming.
        let warm = normal_matrix(10, shape.cols, 3.0);
        softmax(&ctx, &warm, Shape::new(1, shape.cols), &options).expect("warm-up call");
        (app, ctx)
    };
    // How long the call takes undisturbed, to aim the destroys inside it.
    let (app, ctx) = streaming_context();
    let started = Instant::now();
    let y = softmax(&ctx, &x, shape, &options).expect("undisturbed call");
    let undisturbed = started.elapsed();
    check_output(&y, &x, shape, &options);
    drop((app, ctx));
    eprintln!("undisturbed streaming call {shape:?} in 64 chunks: {undisturbed:.2?}");
    let mut outcomes = Vec::new();
    for fraction in [0.0, 0.1, 0.25, 0.5, 0.75, 1.5] {
        let delay = undisturbed.mul_f64(fraction);
        let (app, ctx) = streaming_context();
        let device = app.device.clone();
        let started = Instant::now();
        let destroyer = thread::spawn(move || {
            thread::sleep(delay);
            device.destroy();
            Instant::now()
        });
        let (input, call_ctx) = (x.clone(), ctx.clone());
        let result = within(
            Duration::from_secs(120),
            "a streaming call while the device is destroyed",
            move || {
                let r = softmax(&call_ctx, &input, shape, &options);
                (r, Instant::now())
            },
        );
        let destroyed_at = destroyer.join().expect("destroyer") - started;
        let (result, ended_at) = (result.0, result.1 - started);
        let outcome = match &result {
            Ok(_) => "Ok".to_string(),
            Err(e) => format!("Err({}): {}", variant(e), one_line(&e.to_string())),
        };
        eprintln!(
            "destroy after {delay:.2?} (done at {destroyed_at:.2?}), call ended at \
             {ended_at:.2?}: {outcome}"
        );
        app.report("  ");
        match &result {
            // Ok is right only if the call was done before the device was destroyed, and
            // then the result must be the right one.
            Ok(y) => {
                check_output(y, &x, shape, &options);
                outcomes.push("Ok");
            }
            Err(e) => {
                assert!(is_gpu_failure(e), "unexpected error {e:?}");
                outcomes.push(variant(e));
            }
        }
    }
    eprintln!("outcomes by delay (0, 10, 25, 50, 75, 150 % of the call): {outcomes:?}");
}

#[test]
fn a_gpu_that_never_finishes_times_out() {
    let _serial = serial();
    // A 1 ns time-out. The host future awaits each readback, and a readback's future
    // checks its deadline whenever it is polled: one not already mapped when first
    // awaited gives Timeout(1 ns). Matrices of 51 MB and more (64 x 200,000, and
    // 1 x 4,000,000 in one row) cannot be done on any GPU, and mapped, by then: they
    // must time out. The smallest may have been mapped already: Ok, and then the result
    // must be right. The sizes between may go either way.
    let o = ContextOptions::default().with_timeout(Duration::from_nanos(1));
    let ctx = Arc::new(block_on(Context::new(o)).expect("context"));
    let mut rng = Rng::new(77);
    let mut observed = Vec::new();
    for (rows, cols, must_time_out) in [
        (1, 1000, false),
        (64, 4096, false),
        (256, 16_384, false),
        (64, 200_000, true),
        (1, 4_000_000, true),
    ] {
        let shape = Shape::new(rows, cols);
        let x = Arc::new(normal_matrix(rng.next_u64(), rows * cols, 3.0));
        let (input, call_ctx) = (x.clone(), ctx.clone());
        let started = Instant::now();
        let result = within(Duration::from_secs(60), "a call with a 1 ns time-out", {
            move || softmax(&call_ctx, &input, shape, &Options::softmax())
        });
        let took = started.elapsed();
        match result {
            Ok(y) => {
                assert!(
                    !must_time_out,
                    "{shape:?}: Ok in {took:.2?} with a 1 ns time-out: the readback was \
                     not waited for with the time-out"
                );
                check_output(&y, &x, shape, &Options::softmax());
                eprintln!("1 ns time-out, {shape:?}: Ok (correct) in {took:.2?}");
                observed.push("Ok");
            }
            Err(Error::Timeout(d)) => {
                assert_eq!(d, Duration::from_nanos(1), "the time-out reported");
                eprintln!("1 ns time-out, {shape:?}: Err(Timeout({d:?})) in {took:.2?}");
                observed.push("Timeout");
                // The abandoned call disturbs no other context: a normal call of the
                // same shape on the shared one is right.
                let (input, normal) = (x.clone(), common::ctx());
                let y = within(Duration::from_secs(60), "a normal call after a time-out", {
                    move || softmax(normal, &input, shape, &Options::softmax())
                })
                .unwrap_or_else(|e| panic!("{shape:?}: the normal call after a time-out: {e}"));
                check_output(&y, &x, shape, &Options::softmax());
            }
            Err(e) => panic!("{shape:?}: expected Ok or Timeout, got {e:?}"),
        }
    }
    eprintln!("outcomes by size: {observed:?}");
}

#[test]
fn a_time_out_too_long_for_the_clock_waits_as_long_as_needed() {
    // Duration::MAX cannot be added to the clock: the call waits without a deadline
    // (it once panicked computing one).
    let o = ContextOptions::default().with_timeout(Duration::MAX);
    let ctx = block_on(Context::new(o)).expect("context");
    let shape = Shape::new(64, 4096);
    let x = normal_matrix(78, shape.rows * shape.cols, 3.0);
    let y = softmax(&ctx, &x, shape, &Options::softmax()).unwrap();
    check_output(&y, &x, shape, &Options::softmax());
}

#[test]
fn a_timed_out_call_leaves_the_device_usable() {
    let _serial = serial();
    // Two contexts on one app device: one that always gives up at once, one that waits.
    let app = AppDevice::new();
    let o = ContextOptions::default().with_timeout(Duration::from_nanos(1));
    let impatient = Arc::new(Context::from_device(&app.device, &app.queue, o).expect("context"));
    let patient = Arc::new(
        Context::from_device(&app.device, &app.queue, ContextOptions::default()).expect("context"),
    );
    let shape = Shape::new(64, 100_000);
    let x = Arc::new(normal_matrix(11, shape.rows * shape.cols, 3.0));
    let options = Options::log_softmax();
    let mut timeouts = 0;
    for round in 0..3 {
        let (input, call_ctx) = (x.clone(), impatient.clone());
        match within(
            Duration::from_secs(60),
            "a call with a 1 ns time-out",
            move || softmax(&call_ctx, &input, shape, &options),
        ) {
            Ok(y) => check_output(&y, &x, shape, &options),
            Err(Error::Timeout(_)) => timeouts += 1,
            Err(e) => panic!("round {round}: expected Ok or Timeout, got {e:?}"),
        }
        // The abandoned work and its staging buffers must not disturb the next call.
        let (input, call_ctx) = (x.clone(), patient.clone());
        let y = within(
            Duration::from_secs(60),
            "a call after a time-out",
            move || softmax(&call_ctx, &input, shape, &options),
        )
        .unwrap_or_else(|e| panic!("round {round}: the call after a time-out failed: {e}"));
        check_output(&y, &x, shape, &options);
    }
    eprintln!(
        "time-outs in 3 rounds: {timeouts}; staging bytes pooled by the impatient context: \
         {}, by the patient one: {}",
        impatient.staging_bytes(),
        patient.staging_bytes()
    );
    app.report("after time-outs");
    assert!(
        app.uncaptured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty(),
        "abandoning timed-out work raised uncaptured wgpu errors"
    );
}
