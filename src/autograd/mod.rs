//! The tape. An operation on tensors that need gradients records a node holding its backward rule
//! (a closure that owns what the forward pass saved) and links to its inputs' nodes; nodes are
//! numbered in execution order. `Tensor::backward` collects the nodes reachable from a scalar loss,
//! walks them in reverse order, and sums the gradients flowing into each tensor, so gradients add
//! where a tensor feeds several operations (or one operation twice); a leaf's sum is reported
//! once, right after its last consumer has run (the "gradient ready" moment). Each rule runs once and is
//! dropped right after, freeing the activations it saved; when the loss and the outputs are
//! dropped, the whole graph goes with them, so nothing grows across training steps.
//!
//! In [`no_grad`] mode nothing is recorded and no activation is kept.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::{self, RawTensor, TensorId};
use crate::core::error::{Error, Result};

/// A backward rule: from the gradient of the op's output, the gradients of its inputs (in the order
/// the inputs were recorded; `None` for an input that needs none). Gradients are raw tensors: the
/// backward pass itself is never recorded.
pub type BackwardRule = Box<dyn FnOnce(&RawTensor) -> Result<Vec<Option<RawTensor>>> + Send + Sync>;

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

/// The node of an op over inputs with these nodes, holding `rule` (`None`: no backward rule, so
/// reaching it in backward is an error naming `op`). `Tensor`'s `record` decides whether to call
/// this at all.
pub(crate) fn op_node(
    op: &'static str,
    inputs: Vec<Option<Arc<Node>>>,
    rule: Option<BackwardRule>,
) -> Arc<Node> {
    let kind = match rule {
        Some(rule) => NodeKind::Op(Mutex::new(Some(rule))),
        None => NodeKind::NoRule,
    };
    Arc::new(Node {
        seq: next_seq(),
        op,
        inputs,
        kind,
    })
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
fn accumulate<K: Ord>(pending: &mut BTreeMap<K, RawTensor>, k: K, g: RawTensor) -> Result<()> {
    let total = match pending.remove(&k) {
        Some(sum) => backend::add(&sum, &g)?,
        None => g,
    };
    pending.insert(k, total);
    Ok(())
}

/// For each node, the leaves whose gradient is final once the walk has run it: a leaf's last
/// consumer in the reverse walk is the one with the smallest sequence number (a leaf with no
/// consumer, the root itself, is final at its own place). Each list runs from the last-made leaf
/// to the first (reverse parameter order when several finish together).
fn leaves_by_last_consumer(nodes: &BTreeMap<u64, Arc<Node>>) -> HashMap<u64, Vec<Arc<Node>>> {
    let mut last_consumer: HashMap<u64, u64> = HashMap::new();
    for (seq, node) in nodes {
        for input in node.inputs.iter().flatten() {
            let at = last_consumer.entry(input.seq).or_insert(*seq);
            *at = (*at).min(*seq);
        }
    }
    let mut ready: HashMap<u64, Vec<Arc<Node>>> = HashMap::new();
    for (seq, node) in nodes.iter().rev() {
        if matches!(node.kind, NodeKind::Leaf(_)) {
            let after = last_consumer.get(seq).copied().unwrap_or(*seq);
            ready.entry(after).or_default().push(node.clone());
        }
    }
    ready
}

/// Runs backward from `root` with output gradient `seed`. Each leaf's gradient (summed over
/// every op that used it) goes to `leaf_gradient` once, as soon as the walk has run the leaf's
/// last consumer, not at the end: that is the "gradient ready" moment a data-parallel run starts
/// communicating at while the rest of backward runs.
pub(crate) fn backward(
    root: &Arc<Node>,
    seed: RawTensor,
    mut leaf_gradient: impl FnMut(TensorId, RawTensor) -> Result<()>,
) -> Result<()> {
    let nodes = reachable(root);
    let mut ready_after = leaves_by_last_consumer(&nodes);
    let mut pending: BTreeMap<u64, RawTensor> = BTreeMap::new();
    pending.insert(root.seq, seed);
    for (seq, node) in nodes.iter().rev() {
        if let Some(grad) = pending.remove(seq) {
            run_node(node, grad, &mut pending)?;
        }
        for leaf in ready_after.remove(seq).unwrap_or_default() {
            if let (NodeKind::Leaf(id), Some(grad)) = (&leaf.kind, pending.remove(&leaf.seq)) {
                leaf_gradient(*id, grad)?;
            }
        }
    }
    Ok(())
}

/// Runs one node's backward rule on its output gradient, adding its inputs' gradients into
/// `pending`. A leaf keeps its gradient pending until [`backward`] reports it.
fn run_node(node: &Node, grad: RawTensor, pending: &mut BTreeMap<u64, RawTensor>) -> Result<()> {
    match &node.kind {
        NodeKind::Leaf(_) => {
            pending.insert(node.seq, grad);
            Ok(())
        }
        NodeKind::NoRule => Err(Error::NoBackward { op: node.op }),
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
                    accumulate(pending, input.seq, g)?;
                }
            }
            Ok(())
        }
    }
}
