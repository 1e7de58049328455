//! The host path's futures wait without blocking: they return `Pending` while the GPU
//! works, wake when a readback is mapped, and can be dropped mid-flight without losing
//! staging memory or corrupting the next call.

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::{check_output, ctx, normal_matrix};
use wgpu_softmax::{block_on, Context, ContextOptions, HostInputs, Options, Shape};

/// A waker that counts its wakes.
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn assert_send<T: Send>(_: &T) {}

#[test]
fn a_large_call_is_pending_after_one_poll_and_then_correct() {
    let ctx = ctx();
    let shape = Shape::new(1024, 32_000);
    let x = normal_matrix(1, shape.rows * shape.cols, 3.0);
    // Warm the pipeline cache, so that the poll below times the call, not a compile.
    common::check_host(ctx, &x, shape, &Options::softmax());
    let mut y = vec![0.0f32; x.len()];
    let options = Options::softmax();
    let started = Instant::now();
    let (first, first_poll, result) = {
        let mut future = pin!(ctx.run(&x, &mut y, shape, &options, HostInputs::default()));
        assert_send(&future);
        let first = future
            .as_mut()
            .poll(&mut TaskContext::from_waker(Waker::noop()));
        let first_poll = started.elapsed();
        (first.is_pending(), first_poll, block_on(future))
    };
    assert!(first, "a 1024 x 32000 call was ready after one poll");
    let total = started.elapsed();
    eprintln!("first poll: Pending after {first_poll:.3?}; whole call {total:.3?}");
    result.expect("run");
    check_output(&y, &x, shape, &options);
}

#[test]
fn a_dropped_call_loses_no_staging_memory_and_the_next_call_is_right() {
    // A context of its own: the staging pool's bytes are what this test counts, and the
    // shared context's pool serves the other tests in parallel.
    let ctx = &block_on(Context::new(ContextOptions::default())).expect("context");
    let shape = Shape::new(512, 32_000);
    let x = normal_matrix(2, shape.rows * shape.cols, 3.0);
    let options = Options::softmax();
    // One whole call first: the pool then holds what a call of this shape uses.
    let mut y = vec![0.0f32; x.len()];
    block_on(ctx.run(&x, &mut y, shape, &options, HostInputs::default())).expect("run");
    let held = ctx.staging_bytes();
    assert!(held > 0);
    for _ in 0..3 {
        let mut dropped_output = vec![0.0f32; x.len()];
        let mut future = Box::pin(ctx.run(
            &x,
            &mut dropped_output,
            shape,
            &options,
            HostInputs::default(),
        ));
        let first = future
            .as_mut()
            .poll(&mut TaskContext::from_waker(Waker::noop()));
        assert!(first.is_pending(), "the call finished in one poll");
        drop(future);
        // The dropped call's slots are freed, not returned: the pool holds less.
        assert!(
            ctx.staging_bytes() < held,
            "the dropped call's slots came back"
        );
    }
    let x2 = normal_matrix(3, shape.rows * shape.cols, 5.0);
    let mut y2 = vec![0.0f32; x2.len()];
    block_on(ctx.run(&x2, &mut y2, shape, &options, HostInputs::default())).expect("run");
    check_output(&y2, &x2, shape, &options);
    // The next call made what it needed and gave it back: the pool is as it was.
    assert_eq!(ctx.staging_bytes(), held);
}

#[test]
fn two_calls_on_one_thread_progress_together_and_wake_their_task() {
    let ctx = ctx();
    let shape = Shape::new(256, 32_000);
    let a = normal_matrix(4, shape.rows * shape.cols, 2.0);
    let b = normal_matrix(5, shape.rows * shape.cols, 7.0);
    let (mut ya, mut yb) = (vec![0.0f32; a.len()], vec![0.0f32; b.len()]);
    let options = Options::log_softmax();
    let counter = Arc::new(Counter(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut task = TaskContext::from_waker(&waker);
    {
        let mut fa = pin!(ctx.run(&a, &mut ya, shape, &options, HostInputs::default()));
        let mut fb = pin!(ctx.run(&b, &mut yb, shape, &options, HostInputs::default()));
        let (mut done_a, mut done_b) = (false, false);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !(done_a && done_b) {
            assert!(Instant::now() < deadline, "the two calls did not finish");
            let seen = counter.0.load(Ordering::SeqCst);
            if !done_a {
                if let Poll::Ready(r) = fa.as_mut().poll(&mut task) {
                    r.expect("run a");
                    done_a = true;
                }
            }
            if !done_b {
                if let Poll::Ready(r) = fb.as_mut().poll(&mut task) {
                    r.expect("run b");
                    done_b = true;
                }
            }
            // Sleep until a wake (no busy loop): the poller thread wakes the task.
            while !(done_a && done_b) && counter.0.load(Ordering::SeqCst) == seen {
                assert!(Instant::now() < deadline, "no wake came");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    assert!(counter.0.load(Ordering::SeqCst) > 0);
    check_output(&ya, &a, shape, &options);
    check_output(&yb, &b, shape, &options);
}
