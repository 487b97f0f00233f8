//! The tape. An operation on tensors that need gradients records a node holding its backward rule
//! (a closure that owns what the forward pass saved) and links to its inputs' nodes; nodes are
//! numbered in execution order. `Tensor::backward` collects the nodes reachable from a scalar loss,
//! walks them in reverse order, and sums the gradients flowing into each tensor, so gradients add
//! where a tensor feeds several operations (or one operation twice). Each rule runs once and is
//! dropped right after, freeing the activations it saved; when the loss and the outputs are
//! dropped, the whole graph goes with them, so nothing grows across training steps.
//!
//! In [`no_grad`] mode nothing is recorded and no activation is kept.

mod gradients;

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use gradients::Gradients;

use crate::backend;
use crate::core::error::{Error, Result};
use crate::tensor::{Tensor, TensorId};

/// A backward rule: from the gradient of the op's output, the gradients of its inputs (in the order
/// the inputs were recorded; `None` for an input that needs none).
pub type BackwardRule = Box<dyn FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// One recorded operation (or a leaf: a tensor whose gradient the user wants).
pub struct Node {
    seq: u64,
    op: &'static str,
    inputs: Vec<Option<Arc<Node>>>,
    kind: NodeKind,
}

enum NodeKind {
    /// A tensor marked with `requires_grad`: gradients arriving here are reported under its id.
    Leaf(TensorId),
    /// An operation with its backward rule, taken (and so freed) when backward runs it.
    Op(Mutex<Option<BackwardRule>>),
    /// An operation that has no backward rule: reaching it in backward is an error naming it.
    NoRule,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({} #{})", self.op, self.seq)
    }
}

fn next_seq() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether operations on this thread are being recorded.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(Cell::get)
}

/// Runs `f` without recording anything (evaluation): no nodes, no saved activations.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(false)));
    f()
}

/// A leaf node for a tensor that requires gradients.
pub(crate) fn leaf(id: TensorId) -> Arc<Node> {
    Arc::new(Node {
        seq: next_seq(),
        op: "leaf",
        inputs: Vec::new(),
        kind: NodeKind::Leaf(id),
    })
}

/// Whether an op over `inputs` must be recorded.
pub fn needs_grad(inputs: &[&Tensor]) -> bool {
    is_grad_enabled() && inputs.iter().any(|t| t.grad_node().is_some())
}

/// Records `op` producing `output` from `inputs` when any input needs gradients. `rule` builds the
/// backward rule only then, so a forward pass that records nothing keeps nothing alive.
pub fn record<F>(
    op: &'static str,
    inputs: &[&Tensor],
    output: Tensor,
    rule: impl FnOnce() -> F,
) -> Tensor
where
    F: FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
{
    if !needs_grad(inputs) {
        return output;
    }
    let node = Node {
        seq: next_seq(),
        op,
        inputs: inputs.iter().map(|t| t.grad_node().cloned()).collect(),
        kind: NodeKind::Op(Mutex::new(Some(Box::new(rule())))),
    };
    output.with_grad_node(Some(Arc::new(node)))
}

/// Records an op that has no backward rule: backward through it fails with an error naming it.
pub fn record_without_rule(op: &'static str, inputs: &[&Tensor], output: Tensor) -> Tensor {
    if !needs_grad(inputs) {
        return output;
    }
    let node = Node {
        seq: next_seq(),
        op,
        inputs: inputs.iter().map(|t| t.grad_node().cloned()).collect(),
        kind: NodeKind::NoRule,
    };
    output.with_grad_node(Some(Arc::new(node)))
}

/// Every node reachable from `root`, by sequence number (execution order).
fn reachable(root: &Arc<Node>) -> BTreeMap<u64, Arc<Node>> {
    let mut seen = HashSet::new();
    let mut nodes = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(node) = stack.pop() {
        if !seen.insert(node.seq) {
            continue;
        }
        stack.extend(node.inputs.iter().flatten().cloned());
        nodes.insert(node.seq, node);
    }
    nodes
}

/// Adds `g` into the gradient pending for key `k`.
fn accumulate<K: Ord>(pending: &mut BTreeMap<K, Tensor>, k: K, g: Tensor) -> Result<()> {
    let total = match pending.remove(&k) {
        Some(sum) => backend::add(&sum, &g)?,
        None => g,
    };
    pending.insert(k, total);
    Ok(())
}

/// Runs backward from `root` with output gradient `seed`, adding leaf gradients into `into`.
pub(crate) fn backward(root: &Arc<Node>, seed: Tensor, into: &mut Gradients) -> Result<()> {
    let nodes = reachable(root);
    let mut pending: BTreeMap<u64, Tensor> = BTreeMap::new();
    pending.insert(root.seq, seed);
    for (seq, node) in nodes.iter().rev() {
        let Some(grad) = pending.remove(seq) else {
            continue;
        };
        match &node.kind {
            NodeKind::Leaf(id) => into.accumulate(*id, grad)?,
            NodeKind::NoRule => return Err(Error::NoBackward { op: node.op }),
            NodeKind::Op(rule) => {
                let rule = rule
                    .lock()
                    .map_err(|_| Error::Internal("tape lock poisoned".into()))?
                    .take()
                    .ok_or(Error::GraphConsumed { op: node.op })?;
                let input_grads = rule(&grad)?;
                if input_grads.len() != node.inputs.len() {
                    return Err(Error::Internal(format!(
                        "backward rule of {} returned {} gradients for {} inputs",
                        node.op,
                        input_grads.len(),
                        node.inputs.len()
                    )));
                }
                for (input, g) in node.inputs.iter().zip(input_grads) {
                    if let (Some(input), Some(g)) = (input, g) {
                        accumulate(&mut pending, input.seq, g)?;
                    }
                }
            }
        }
    }
    Ok(())
}
