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
