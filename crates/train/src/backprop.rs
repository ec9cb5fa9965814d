//! One micro-batch's loss and its gradients, the backward pass run block by
//! block.
//!
//! The forward pass is cut at the blocks' boundaries into segments, each
//! recorded by autodiff as a graph of its own whose input is a fresh leaf:
//! the embeddings (when `wte` or `wpe` trains), every block from the lowest
//! one a gradient must reach, and the top (`ln_f`, the tied head, the loss).
//! Blocks below the segments run without a graph. The backward pass goes
//! from the top segment down, one segment at a time; the gradient arriving at
//! a segment's output enters its graph as `Σ output ⊙ g`, and each segment's
//! parameter gradients are added to the step's sums and freed before the next
//! segment's backward. So the micro-batch's gradients never exist all at once
//! beside the sums (PyTorch adds into `.grad` during its backward the same way):
//! on the 1 B course model, 1.85 GB less at the peak.
//!
//! With activation checkpointing, the blocks' forward runs without autodiff
//! and keeps only each block's input; the backward recomputes one block at a
//! time before differentiating it. The recomputation replays the pass from
//! its state at that block (the same dropout masks), so the gradients are the
//! same values, and only one block's activations are alive at a time.
//!
//! The order of every addition is the whole-graph backward's: a segment's
//! output has two uses in the next block (its norm and the residual sum), and
//! `wte`'s two gradients (head and embeddings) are added to each other before
//! they join the step's sum, so the bits are the same as one `backward()`
//! over the whole pass (tested).

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::s;
use tp06_model::names::{self, Layer, Part};
use tp06_model::rng::mix64;
use tp06_model::{FreezePlan, Gpt2, Pass, TrainBackend};

use crate::trainer::{Batch, Named};

/// Where the blocks' activations live between the forward and the backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activations {
    /// Recorded by autodiff during the forward pass, all blocks at once.
    Kept,
    /// Only each block's input is kept; the block is run again in the backward
    /// pass (activation checkpointing: one block's activations at a time, one
    /// more forward pass of the trained blocks).
    Recomputed,
}

/// A block's forward pass, waiting for its backward.
enum Segment<B: AutodiffBackend> {
    /// Recorded: its input leaf and its output.
    Kept { block: usize, input: Tensor<B, 3>, output: Tensor<B, 3> },
    /// To be recomputed: its input, and the pass as it was when the block began.
    Recomputed { block: usize, input: Tensor<B::InnerBackend, 3>, pass: Pass },
}

/// Whether block `i` of `model` has a parameter that trains: one the plan
/// trains, or an adapter.
fn block_trains<B: Backend>(model: &Gpt2<B>, plan: &FreezePlan, i: usize) -> bool {
    model.h[i].has_lora()
        || Layer::ALL
            .into_iter()
            .flat_map(|l| [Part::Weight, Part::Bias].map(|p| names::param(i, l, p)))
            .any(|name| plan.trains(&name))
}

/// `x` as the input of a graph of its own: a leaf, tracked when a gradient
/// must flow below it.
fn leaf<B: AutodiffBackend, const D: usize>(x: Tensor<B::InnerBackend, D>, tracked: bool) -> Tensor<B, D> {
    let x = Tensor::from_inner(x);
    if tracked { x.require_grad() } else { x }
}

/// The seed of the backend's own dropout sampler (GPUs) for block `block`
/// of the micro-batch seeded `seed`: a block's recomputation draws its
/// forward pass's masks again.
fn block_seed(seed: u64, block: usize) -> u64 {
    mix64(seed ^ (block as u64 + 1).rotate_left(48))
}

/// Adds the gradients of `module`'s parameters, named under `prefix`, to `sums`.
fn add_grads<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    prefix: &str,
    gradients: &B::Gradients,
    sums: &mut Named<B::InnerBackend>,
) {
    module.visit(&mut Grads::<B> { path: vec![prefix.to_string()], gradients, sums });
}

/// Adds `g` to the sum named `name` (or starts it).
pub(crate) fn add_to<B: Backend, const D: usize>(sums: &mut Named<B>, name: &str, g: Tensor<B, D>) {
    let n = g.dims().iter().product::<usize>();
    let g = g.reshape([n]);
    let sum = match sums.remove(name) {
        Some(acc) => acc + g,
        None => g,
    };
    sums.insert(name.to_string(), sum);
}

/// Collects the gradients of a module's trainable parameters.
struct Grads<'a, B: AutodiffBackend> {
    path: Vec<String>,
    gradients: &'a B::Gradients,
    sums: &'a mut Named<B::InnerBackend>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Grads<'_, B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = param.val().grad(self.gradients) {
            add_to(self.sums, &self.path.join("."), g);
        }
    }
}

/// The loss of `batch` divided by `items` (the step's label tokens), run in
/// `pass` (seeded `seed`); the gradients of the parameters that train under
/// `plan` are added to `sums`, by HF name. Returns the loss.
#[allow(clippy::too_many_arguments)]
pub fn micro_batch<B: TrainBackend>(
    model: &Gpt2<B>,
    plan: &FreezePlan,
    batch: &Batch<B>,
    items: f64,
    mut pass: Pass,
    seed: u64,
    activations: Activations,
    sums: &mut Named<B::InnerBackend>,
) -> Tensor<B::InnerBackend, 1> {
    let [b, t] = batch.ids.dims();
    let device = batch.ids.device();
    let n_layer = model.h.len();
    let embeddings_train = plan.trains(names::WTE) || plan.trains(names::WPE);
    // The first block with a segment: every block from the lowest one a
    // gradient must reach; those below it run without a graph.
    let first =
        if embeddings_train { 0 } else { (0..n_layer).find(|&i| block_trains(model, plan, i)).unwrap_or(n_layer) };
    let recompute = activations == Activations::Recomputed;

    // Forward: the embeddings, the blocks without a graph, then the segments.
    let embedded = model.embed(batch.ids.clone(), 0, batch.layout.documents.as_ref(), &mut pass); // [b, t, c]
    let mut x = embedded.clone().inner();
    // Its graph, kept for the embeddings' backward when they train.
    let embedded = embeddings_train.then_some(embedded);
    for block in &model.h[..first] {
        x = block.forward(Tensor::from_inner(x), &batch.layout, &mut pass).inner();
    }
    // Recomputed blocks run their forward pass with parameters that record
    // nothing: the same backend and kernels as the recomputation (the inner
    // backend's would round differently).
    let untracked = recompute.then(|| model.clone().no_grad());
    let mut segments = Vec::with_capacity(n_layer - first);
    for i in first..n_layer {
        // Its input needs a gradient when something below it trains.
        let tracked = embeddings_train || i > first;
        match &untracked {
            None => {
                let input = leaf::<B, 3>(x, tracked);
                let output = model.h[i].forward(input.clone(), &batch.layout, &mut pass);
                x = output.clone().inner();
                segments.push(Segment::Kept { block: i, input, output });
            }
            Some(untracked) => {
                B::seed(&device, block_seed(seed, i));
                let replay = pass.clone();
                let output = untracked.h[i].forward(Tensor::from_inner(x.clone()), &batch.layout, &mut pass);
                segments.push(Segment::Recomputed { block: i, input: x, pass: replay });
                x = output.inner();
            }
        }
    }

    // The top segment: ln_f, the tied head (`wte` as a leaf of this graph
    // when it trains: the embeddings' graph holds its own node), the loss.
    let top = leaf::<B, 3>(x, first < n_layer || embeddings_train);
    let hidden = model.ln_f.forward(top.clone(), &pass);
    let c = hidden.dims()[2];
    let hidden = hidden.slice(s![.., 0..t - 1, ..]).reshape([b * (t - 1), c]); // [n, c]
    let wte_trains = plan.trains(names::WTE);
    let wte = leaf::<B, 2>(model.wte.weight.val().inner(), wte_trains);
    let logits = pass.tied_head(hidden, wte.clone()); // [n, vocab]
    let loss = pass.nll_sum(logits, &batch.targets, &batch.weights) / items;
    let value = loss.clone().inner();
    let ln_f_trains = plan.trains(names::LN_F_WEIGHT) || plan.trains(names::LN_F_BIAS);
    if !(ln_f_trains || wte_trains || first < n_layer || embeddings_train) {
        return value; // nothing trains: the loss has no graph
    }
    let gradients = loss.backward();
    add_grads(&model.ln_f, names::LN_F, &gradients, sums);
    // The head's share of `wte`'s gradient waits for the embeddings' share.
    let mut wte_head = if wte_trains { wte.grad(&gradients) } else { None };
    let mut g = top.grad(&gradients);
    drop(gradients);

    // Backward, one block at a time from the top.
    for segment in segments.into_iter().rev() {
        let Some(g_out) = g.take() else { break };
        let (block, input, output) = match segment {
            Segment::Kept { block, input, output } => (block, input, output),
            Segment::Recomputed { block, input, pass: mut replay } => {
                B::seed(&device, block_seed(seed, block));
                let input = leaf::<B, 3>(input, embeddings_train || block > first);
                let output = model.h[block].forward(input.clone(), &batch.layout, &mut replay);
                (block, input, output)
            }
        };
        let gradients = (output * Tensor::from_inner(g_out)).sum().backward();
        add_grads(&model.h[block], &names::block(block), &gradients, sums);
        g = input.grad(&gradients);
    }

    // The embeddings.
    if let (Some(embedded), Some(g_out)) = (embedded, g) {
        let gradients = (embedded * Tensor::from_inner(g_out)).sum().backward();
        if let Some(g_embed) = model.wte.weight.val().grad(&gradients) {
            wte_head = Some(match wte_head.take() {
                Some(head) => head + g_embed,
                None => g_embed,
            });
        }
        add_grads(&model.wpe, names::WPE_MODULE, &gradients, sums);
    }
    if let Some(g_wte) = wte_head {
        add_to(sums, names::WTE, g_wte);
    }
    value
}
