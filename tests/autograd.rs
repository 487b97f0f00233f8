//! The tape's semantics: gradients add at branches, no-grad mode records and keeps nothing, saved
//! tensors are freed by backward, accumulation is explicit, and misuse is an error naming the op.

use std::sync::Mutex;

use kiln::tensor::record_without_rule;
use kiln::{memory_stats, no_grad, ops, Device, Error, Gradients, Tensor, Window2d};

fn values(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

#[test]
fn gradients_add_where_a_tensor_feeds_several_ops() {
    // L = Σ (x·x + 3x) → dL/dx = 2x + 3: x feeds mul twice and scale once.
    let x = Tensor::from_vec(vec![1.0f32, -2.0, 0.5], &[3], Device::Cpu)
        .unwrap()
        .with_grad();
    let loss =
        ops::sum(&ops::add(&ops::mul(&x, &x).unwrap(), &ops::scale(&x, 3.0).unwrap()).unwrap())
            .unwrap();
    let grads = loss.backward().unwrap();
    assert_eq!(values(grads.get(&x).unwrap()), [5.0, -1.0, 4.0]);
}

#[test]
fn a_shared_subexpression_gets_the_sum_of_its_consumers_gradients() {
    // h = 2x is used by two branches: L = Σ h + Σ h·h → dL/dh = 1 + 2h, dL/dx = 2(1 + 2h).
    let x = Tensor::from_vec(vec![0.5f32, -1.0], &[2], Device::Cpu)
        .unwrap()
        .with_grad();
    let h = ops::scale(&x, 2.0).unwrap();
    let loss = ops::add(
        &ops::sum(&h).unwrap(),
        &ops::sum(&ops::mul(&h, &h).unwrap()).unwrap(),
    )
    .unwrap();
    let grads = loss.backward().unwrap();
    assert_eq!(values(grads.get(&x).unwrap()), [6.0, -6.0]);
}

/// Held by the tests that use the emulated device: one of them measures its live memory, which
/// another test's buffers would disturb (tests in one binary run in parallel under `cargo test`).
static DEVICE: Mutex<()> = Mutex::new(());

fn no_grad_records_nothing_and_keeps_no_activations(device: Device) {
    let _device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let x = Tensor::randn(&[4, 3, 9, 9], 1.0, 1, device).unwrap();
    let w = Tensor::randn(&[5, 3, 3, 3], 0.2, 2, device)
        .unwrap()
        .with_grad();
    let forward = || {
        let h = ops::relu(&ops::conv2d(&x, &w, None, Window2d::square(3, 1, 1)).unwrap()).unwrap();
        ops::mean(&ops::max_pool2d(&h, Window2d::square(2, 2, 0)).unwrap()).unwrap()
    };
    let base = memory_stats(&device).unwrap().live_bytes;
    let recorded = forward();
    let with_tape = memory_stats(&device).unwrap().live_bytes;
    assert!(recorded.needs_grad());
    let evaluated = no_grad(forward);
    let without_tape = memory_stats(&device).unwrap().live_bytes;
    assert!(!evaluated.needs_grad(), "no_grad must not record");
    // Only the one-element result stays alive in no-grad mode; the recorded pass keeps what
    // its backward needs: the ReLU mask (u8) and the max-pool argmax (i32), while the
    // convolution keeps x and w themselves (no copies, no columns).
    assert!(
        without_tape - with_tape <= 512,
        "no-grad kept {} bytes",
        without_tape - with_tape
    );
    let (mask, argmax) = (4 * 5 * 9 * 9, 4 * 5 * 4 * 4 * 4);
    assert!(
        with_tape - base >= mask + argmax,
        "the recorded pass saved {} bytes, less than its mask and argmax",
        with_tape - base
    );
    assert!(matches!(
        evaluated.backward(),
        Err(Error::InvalidArgument { .. })
    ));
    // Backward frees what the forward saved.
    recorded.backward().unwrap();
    let after_backward = memory_stats(&device).unwrap().live_bytes;
    assert!(
        after_backward < with_tape,
        "backward freed nothing: {with_tape} -> {after_backward}"
    );
}
kiln::test_device!(no_grad_records_nothing_and_keeps_no_activations, gpu);

#[test]
fn accumulation_across_backward_calls_is_explicit() {
    let w = Tensor::from_vec(vec![1.0f32, 2.0], &[2], Device::Cpu)
        .unwrap()
        .with_grad();
    let loss = || ops::sum(&ops::mul(&w, &w).unwrap()).unwrap();
    let fresh = loss().backward().unwrap();
    assert_eq!(values(fresh.get(&w).unwrap()), [2.0, 4.0]);
    let mut accumulated = Gradients::new();
    loss().backward_into(&mut accumulated).unwrap();
    loss().backward_into(&mut accumulated).unwrap();
    assert_eq!(values(accumulated.get(&w).unwrap()), [4.0, 8.0]);
    accumulated.clear();
    loss().backward_into(&mut accumulated).unwrap();
    assert_eq!(values(accumulated.get(&w).unwrap()), [2.0, 4.0]);
}

#[test]
fn an_op_without_a_backward_rule_is_an_error_naming_it() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2], Device::Cpu)
        .unwrap()
        .with_grad();
    let y = record_without_rule("argsort", &[&x], x.detach());
    let err = ops::sum(&y).unwrap().backward().unwrap_err();
    assert!(matches!(err, Error::NoBackward { op: "argsort" }), "{err}");
    assert!(err.to_string().contains("argsort"));
}

#[test]
fn a_graph_is_walked_once_and_misuse_is_an_error() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2], Device::Cpu)
        .unwrap()
        .with_grad();
    let loss = ops::sum(&ops::mul(&x, &x).unwrap()).unwrap();
    loss.backward().unwrap();
    let err = loss.backward().unwrap_err();
    assert!(matches!(err, Error::GraphConsumed { .. }), "{err}");
    let not_scalar = ops::mul(&x, &x).unwrap();
    assert!(not_scalar.backward().is_err());
    let untracked = Tensor::from_vec(vec![1.0f32], &[1], Device::Cpu).unwrap();
    assert!(untracked.backward().is_err());
}

#[test]
fn gradients_flow_across_devices() {
    let x = Tensor::from_vec(vec![1.0f32, -3.0], &[2], Device::Cpu)
        .unwrap()
        .with_grad();
    let _device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let on_device = x.to_device(Device::CudaEmulated).unwrap();
    let loss = ops::sum(&ops::mul(&on_device, &on_device).unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(&x).unwrap();
    assert_eq!(g.device(), Device::Cpu);
    assert_eq!(values(g), [2.0, -6.0]);
}

/// What the hook test saw, in order: backward rules run and gradients reported.
type EventLog = std::sync::Arc<Mutex<Vec<String>>>;

/// `x` unchanged, through an op whose backward rule writes `rule:<name>` into `log` when it runs.
fn logged_identity(name: &'static str, x: &Tensor, log: &EventLog) -> Tensor {
    let out = ops::scale(&x.detach(), 1.0).unwrap();
    let log = log.clone();
    kiln::tensor::record(name, &[x], out, || {
        move |dy: &kiln::backend::RawTensor| {
            log.lock().unwrap().push(format!("rule:{name}"));
            Ok(vec![Some(dy.clone())])
        }
    })
}

/// `backward_with`'s hook reports each leaf once, with the sum over its consumers, right after
/// its last consumer in the reverse walk has run, and before the rest of backward: `v`, used
/// only by the last op, is reported before the rules of the earlier ops run; `w`, used by the
/// first and the second op (L = Σ 3·w + Σ w + Σ v, so dL/dw = 4), only after the first.
#[test]
fn the_gradient_ready_hook_reports_each_leaf_once_after_its_last_consumer() {
    let log: EventLog = Default::default();
    let leaf = |v: f32| {
        Tensor::from_vec(vec![v, v], &[2], Device::Cpu)
            .unwrap()
            .with_grad()
    };
    let (w, v) = (leaf(1.0), leaf(2.0));
    let early = logged_identity("early", &w, &log);
    let late = logged_identity("late", &w, &log);
    let v_use = logged_identity("v_use", &v, &log);
    let loss = ops::add(
        &ops::add(
            &ops::sum(&ops::scale(&early, 3.0).unwrap()).unwrap(),
            &ops::sum(&late).unwrap(),
        )
        .unwrap(),
        &ops::sum(&v_use).unwrap(),
    )
    .unwrap();
    let names = |id| match id {
        id if id == w.id() => "w",
        id if id == v.id() => "v",
        _ => "other",
    };
    let grads = loss
        .backward_with(|id, g| {
            let line = format!("ready:{}={:?}", names(id), values(g));
            log.lock().unwrap().push(line);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        [
            "rule:v_use",
            "ready:v=[1.0, 1.0]",
            "rule:late",
            "rule:early",
            "ready:w=[4.0, 4.0]"
        ]
    );
    // What backward_with returns is what backward returns.
    assert_eq!(values(grads.get(&w).unwrap()), [4.0, 4.0]);
    assert_eq!(values(grads.get(&v).unwrap()), [1.0, 1.0]);
}
