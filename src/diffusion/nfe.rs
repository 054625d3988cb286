//! Counting network evaluations (NFE): how many times a run asks a denoiser or a consistency
//! model for an image, the cost measure diffusion solvers are compared by.
//!
//! Every call of a model's denoiser, score or consistency function counts once per item of its
//! batch, whether the model is a trained network or an analytic prior (so a solver's count does
//! not depend on which prior it is tried with); a consistency function made by integrating a
//! denoiser's ODE (`ode_consistency`) counts the denoiser calls it makes.
//!
//! Backward passes (vector-Jacobian products) are counted apart, as `backward_items`: a call
//! whose input is tracked by autodiff (the variable of an `ascend`/`descend` step, or of
//! `grad`) is differentiated through, so it counts one backward pass per item as well as its
//! forward pass. A backward pass costs about two forward passes, so a solver that takes one per
//! step is not the same cost as one that does not. `grad`, which runs a forward pass again to
//! differentiate it, does not count that forward pass twice ([`pause`]), but counts its backward
//! pass.
//!
//! The counter belongs to the thread: a run executes on one thread ([`crate::runtime::run`]
//! starts it with [`reset`] and ends it with [`take`]), so runs on other threads (tests,
//! several cells) never mix their counts.

use std::cell::Cell;

use serde::{Deserialize, Serialize};

/// The network evaluations of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkEvaluations {
    /// Model calls (a call on a batch counts once).
    pub calls: u64,
    /// Item evaluations: the sum over calls of the items in each call's batch.
    pub item_evaluations: u64,
    /// The largest batch any call evaluated: the number of items the run works on.
    pub items: u64,
    /// Item backward passes: the items of the calls differentiated through.
    #[serde(default)]
    pub backward_items: u64,
}

impl NetworkEvaluations {
    /// Evaluations per item: `item_evaluations / items` (0 when no model was called). For a
    /// solver that restores a whole batch with one call per step, this is its number of calls.
    pub fn per_item(&self) -> f64 {
        if self.items == 0 {
            0.0
        } else {
            self.item_evaluations as f64 / self.items as f64
        }
    }

    /// Backward passes per item: `backward_items / items` (0 when no model was called).
    pub fn backward_per_item(&self) -> f64 {
        if self.items == 0 {
            0.0
        } else {
            self.backward_items as f64 / self.items as f64
        }
    }
}

thread_local! {
    static COUNT: Cell<NetworkEvaluations> = const { Cell::new(NetworkEvaluations {
        calls: 0,
        item_evaluations: 0,
        items: 0,
        backward_items: 0,
    }) };
    static PAUSED: Cell<u32> = const { Cell::new(0) };
}

/// Counts one model call on `items` items (unless counting is paused).
pub fn record(items: usize) {
    if PAUSED.with(Cell::get) > 0 {
        return;
    }
    COUNT.with(|c| {
        let mut n = c.get();
        n.calls += 1;
        n.item_evaluations += items as u64;
        n.items = n.items.max(items as u64);
        c.set(n);
    });
}

/// Counts one backward pass through a call on `items` items (even while forward passes are
/// paused: `grad`'s second forward pass is the one differentiated).
pub fn record_backward(items: usize) {
    COUNT.with(|c| {
        let mut n = c.get();
        n.backward_items += items as u64;
        n.items = n.items.max(items as u64);
        c.set(n);
    });
}

/// The items of `x` (one image or a batch of them) for a model whose images have `shape`.
fn items_of(x: &candle_core::Tensor, shape: &[usize]) -> usize {
    let per_item: usize = shape.iter().product::<usize>().max(1);
    (x.elem_count() / per_item).max(1)
}

/// Counts one call of a model whose images have `shape` on the tensor `x` (one image or a
/// batch of them), and its backward pass when `x` is tracked by autodiff.
pub fn record_tensor(x: &candle_core::Tensor, shape: &[usize]) {
    let items = items_of(x, shape);
    record(items);
    if x.track_op() {
        record_backward(items);
    }
}

/// Counts one forward call on `x` and no backward pass, whatever `x` is: what an analytic
/// prior's exact log-density stands for (the score a trained denoiser would give, which MAP-GA
/// takes without a backward pass), so a solver's count does not depend on the prior.
pub fn record_tensor_forward(x: &candle_core::Tensor, shape: &[usize]) {
    record(items_of(x, shape));
}

/// Starts counting from zero on this thread.
pub fn reset() {
    COUNT.with(|c| c.set(NetworkEvaluations::default()));
}

/// The count so far on this thread, which starts again from zero.
pub fn take() -> NetworkEvaluations {
    COUNT.with(|c| c.replace(NetworkEvaluations::default()))
}

/// The count so far on this thread, left as it is.
pub fn peek() -> NetworkEvaluations {
    COUNT.with(Cell::get)
}

/// Adds the evaluations `n` made elsewhere (a value served from a cache, computed by an earlier
/// run) to this thread's count: calls and item evaluations add up, the largest batch is the
/// larger of the two.
pub fn add(n: NetworkEvaluations) {
    COUNT.with(|c| {
        let mut m = c.get();
        m.calls += n.calls;
        m.item_evaluations += n.item_evaluations;
        m.items = m.items.max(n.items);
        m.backward_items += n.backward_items;
        c.set(m);
    });
}

impl NetworkEvaluations {
    /// What was counted between `before` and `self` (a later count of the same run): the calls
    /// and item evaluations in between, and the largest batch up to now.
    pub fn since(&self, before: &NetworkEvaluations) -> NetworkEvaluations {
        NetworkEvaluations {
            calls: self.calls.saturating_sub(before.calls),
            item_evaluations: self
                .item_evaluations
                .saturating_sub(before.item_evaluations),
            items: self.items,
            backward_items: self.backward_items.saturating_sub(before.backward_items),
        }
    }
}

/// While the returned guard lives, calls are not counted (a forward pass run again).
pub fn pause() -> Pause {
    PAUSED.with(|p| p.set(p.get() + 1));
    Pause(())
}

/// The guard of [`pause`]: counting resumes when it is dropped.
#[derive(Debug)]
pub struct Pause(());

impl Drop for Pause {
    fn drop(&mut self) {
        PAUSED.with(|p| p.set(p.get().saturating_sub(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_items_per_call_and_pauses() {
        reset();
        record(10);
        record(10);
        {
            let _p = pause();
            record(10);
        }
        record(1);
        let n = take();
        assert_eq!(n.calls, 3);
        assert_eq!(n.item_evaluations, 21);
        assert_eq!(n.items, 10);
        assert!((n.per_item() - 2.1).abs() < 1e-12);
        assert_eq!(take(), NetworkEvaluations::default());
        assert_eq!(NetworkEvaluations::default().per_item(), 0.0);
        // A count carried over from elsewhere (a cached value) adds up.
        record(4);
        let before = peek();
        record(10);
        let between = peek().since(&before);
        assert_eq!(
            (between.calls, between.item_evaluations, between.items),
            (1, 10, 10)
        );
        reset();
        record(2);
        add(between);
        assert_eq!(
            take(),
            NetworkEvaluations {
                calls: 2,
                item_evaluations: 12,
                items: 10,
                backward_items: 0,
            }
        );
    }

    #[test]
    fn a_call_on_a_tracked_input_counts_a_backward_pass() {
        use candle_core::{Device, Tensor, Var};
        reset();
        let plain = Tensor::zeros((3, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        record_tensor(&plain, &[1, 2, 2]);
        let var = Var::from_tensor(&plain).unwrap();
        record_tensor(var.as_tensor(), &[1, 2, 2]);
        {
            // grad's second forward pass: not counted again, but differentiated.
            let _p = pause();
            record_tensor(var.as_tensor(), &[1, 2, 2]);
        }
        let n = take();
        assert_eq!((n.calls, n.item_evaluations, n.backward_items), (2, 6, 6));
        assert!((n.per_item() - 2.0).abs() < 1e-12);
        assert!((n.backward_per_item() - 2.0).abs() < 1e-12);
    }
}
