//! Training steps captured as CUDA graphs (src/train/graph_step.rs, src/cuda/graph.rs) on the
//! kernel emulation, and on CUDA device 0 when one is usable: a replayed step gives bit for bit
//! the eager step's loss, parameters, batch-norm statistics and optimizer state (with the
//! learning rate changed between steps, Adam's bias corrections and dropout masks that change
//! every step, f32 and bf16 autocast); replays allocate nothing; a capture refuses host round
//! trips; a graph whose tensors were replaced or shared, a batch of another shape, or another
//! kernel policy than the capture's, is refused.

use std::sync::Mutex;

use kiln::cuda::{count_launches, with_kernel_policy, KernelPolicy};
use kiln::nn::{
    Activation, Architecture, BatchNorm2d, Conv2d, Conv2dSpec, Dropout, Flatten, Init, Linear,
    Mode, Module, Pool2d, Sequential,
};
use kiln::optim::{Adam, AdamConfig, AdamW, Optimizer, RmsProp, Sgd};
use kiln::train::{train_step_with, CapturedStep, Precision, StepPrecision, TrainError};
use kiln::{Device, Tensor};

/// Held by every test here: a capture records all work on its device, and the tests measure the
/// device's memory statistics, so they must not overlap in one process.
static DEVICE: Mutex<()> = Mutex::new(());

const CLASSES: usize = 5;

/// conv 3x3 (pad 1) - batch norm - ReLU - 2x2 max pool - dropout 0.3 - linear, on 1x9x9 images.
fn small_net(device: Device) -> Sequential {
    Sequential::new()
        .push(
            Conv2d::new(
                Conv2dSpec::new(1, 4, 3).padding(1),
                Init::KaimingNormal,
                11,
                device,
            )
            .unwrap(),
        )
        .push(BatchNorm2d::new(4, device).unwrap())
        .push(Activation::Relu)
        .push(Pool2d::max(2, 2))
        .push(Flatten)
        .push(Dropout::new(0.3, 12).unwrap())
        .push(Linear::new(64, CLASSES, Init::KaimingNormal, 13, device).unwrap())
}

fn batch(device: Device, image: &[usize], step: u64) -> (Tensor, Tensor) {
    let n = image[0];
    let images = Tensor::randn(image, 1.0, 500 + step, device).unwrap();
    let labels: Vec<i32> = (0..n)
        .map(|i| ((i as u64 * 7 + step * 3) % CLASSES as u64) as i32)
        .collect();
    (images, Tensor::from_vec(labels, &[n], device).unwrap())
}

type MakeOptimizer = fn(&[Tensor]) -> Box<Optimizer>;

fn optimizer_for(model: &dyn Module, make: MakeOptimizer) -> Box<Optimizer> {
    let params: Vec<Tensor> = model
        .parameters()
        .into_iter()
        .map(|(_, t)| t.clone())
        .collect();
    make(&params)
}

/// Every parameter, buffer and optimizer state tensor, as f32 values.
fn snapshot(model: &dyn Module, optimizer: &Optimizer) -> Vec<(String, Vec<f32>)> {
    let mut out: Vec<(String, Vec<f32>)> = model
        .parameters()
        .into_iter()
        .chain(model.buffers())
        .map(|(name, t)| (name, t.to_vec::<f32>().unwrap()))
        .collect();
    for (name, t) in optimizer.state().tensors {
        out.push((format!("optimizer {name}"), t.to_vec::<f32>().unwrap()));
    }
    out
}

struct Case {
    what: &'static str,
    model: fn(Device) -> Sequential,
    image: [usize; 4],
    optimizer: MakeOptimizer,
    precision: Precision,
}

/// Trains `steps` steps eagerly and the same steps as warm-up + capture + replays; the learning
/// rate changes before step 2. Every loss, correct count and tensor must match exactly.
fn replay_matches_eager(device: Device, case: &Case, steps: u64) {
    let run = |graphs: bool| {
        let mut model = (case.model)(device);
        let mut opt = optimizer_for(&model, case.optimizer);
        let mut precision = StepPrecision::new(case.precision);
        let mut graph: Option<CapturedStep> = None;
        let mut results = Vec::new();
        for step in 0..steps {
            if step == 2 {
                opt.set_lr(opt.lr() * 0.5).unwrap();
            }
            let (x, y) = batch(device, &case.image, step);
            let result = if !graphs {
                train_step_with(&mut model, opt.as_mut(), &x, &y, step, &mut precision).unwrap()
            } else if let Some(g) = &mut graph {
                assert!(g.can_replay(&model, opt.as_ref(), &x, &y), "{}", case.what);
                g.replay(&mut model, opt.as_mut(), &x, &y, step).unwrap()
            } else {
                let (g, r) =
                    CapturedStep::capture(&mut model, opt.as_mut(), &x, &y, step, &precision)
                        .unwrap();
                graph = Some(g);
                r
            };
            results.push(result);
        }
        assert_eq!(opt.steps(), steps, "{}: optimizer step count", case.what);
        (results, snapshot(&model, opt.as_ref()))
    };
    let (eager_results, eager_tensors) = run(false);
    let (graph_results, graph_tensors) = run(true);
    assert_eq!(
        eager_results, graph_results,
        "{} on {device}: (loss, correct) per step",
        case.what
    );
    for ((name, e), (_, g)) in eager_tensors.iter().zip(&graph_tensors) {
        let first = e
            .iter()
            .zip(g)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert!(
            first.is_none(),
            "{} on {device}: {name}[{}] eager {} replayed {}",
            case.what,
            first.unwrap_or(0),
            e[first.unwrap_or(0)],
            g[first.unwrap_or(0)]
        );
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "LeNet-5, SGD with momentum",
            model: |d| Architecture::LeNet5.build(1, 28, CLASSES, 3, d).unwrap(),
            image: [7, 1, 28, 28],
            optimizer: |p| Box::new(Sgd::new(p, 0.05, 0.9, 1e-3).unwrap()),
            precision: Precision::F32,
        },
        Case {
            what: "conv-BN-dropout net, Adam with L2",
            model: small_net,
            image: [6, 1, 9, 9],
            optimizer: |p| {
                let config = AdamConfig {
                    lr: 0.01,
                    weight_decay: 1e-2,
                    ..AdamConfig::default()
                };
                Box::new(Adam::with_config(p, config).unwrap())
            },
            precision: Precision::F32,
        },
        Case {
            what: "conv-BN-dropout net, AdamW, bf16 autocast",
            model: small_net,
            image: [6, 1, 9, 9],
            optimizer: |p| Box::new(AdamW::new(p, 0.01).unwrap()),
            precision: Precision::Bf16,
        },
        Case {
            what: "conv-BN-dropout net, RMSprop",
            model: small_net,
            image: [6, 1, 9, 9],
            optimizer: |p| Box::new(RmsProp::new(p, 0.005).unwrap()),
            precision: Precision::F32,
        },
    ]
}

fn replayed_steps_match_eager_steps_bit_for_bit(device: Device) {
    let _device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    for case in cases() {
        replay_matches_eager(device, &case, 5);
    }
}
kiln::test_device!(replayed_steps_match_eager_steps_bit_for_bit, gpu);

/// The small net with Adam and a [6, 1, 9, 9] batch. (Captured by the caller: a graph belongs to
/// the model object it was captured with, and returning the model would move it.)
fn small_net_with_adam(device: Device) -> (Sequential, Box<Optimizer>, (Tensor, Tensor)) {
    let model = small_net(device);
    let opt = optimizer_for(&model, |p| Box::new(Adam::new(p, 0.01).unwrap()));
    (model, opt, batch(device, &[6, 1, 9, 9], 0))
}

fn capture_at_step_0(
    model: &mut Sequential,
    opt: &mut Optimizer,
    (x, y): &(Tensor, Tensor),
) -> CapturedStep {
    CapturedStep::capture(model, opt, x, y, 0, &StepPrecision::f32())
        .unwrap()
        .0
}

fn replays_allocate_no_device_memory(device: Device) {
    let _device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let (mut model, mut opt, xy) = small_net_with_adam(device);
    let mut graph = capture_at_step_0(&mut model, opt.as_mut(), &xy);
    if device == Device::CudaEmulated {
        let ops = graph.recorded_ops().unwrap();
        assert!(ops > 20, "a whole step is recorded, got {ops} ops");
    }
    let batches: Vec<_> = (1..4).map(|s| batch(device, &[6, 1, 9, 9], s)).collect();
    let before = kiln::memory_stats(&device).unwrap();
    for (step, (x, y)) in batches.iter().enumerate() {
        graph
            .replay(&mut model, opt.as_mut(), x, y, step as u64 + 1)
            .unwrap();
    }
    let after = kiln::memory_stats(&device).unwrap();
    assert_eq!(after.requests, before.requests, "replays request no buffer");
    assert_eq!(after.live_bytes, before.live_bytes);
    drop(graph);
    let released = kiln::memory_stats(&device).unwrap();
    assert!(
        released.live_bytes < after.live_bytes,
        "dropping the graph gives its private memory back ({} -> {} live bytes)",
        after.live_bytes,
        released.live_bytes
    );
}
kiln::test_device!(replays_allocate_no_device_memory, gpu);

/// A layer that reads its input back to the host: fine eagerly, impossible inside a graph.
struct PeekOnHost;

impl Module for PeekOnHost {
    fn forward(&mut self, x: &Tensor, _mode: Mode) -> kiln::Result<Tensor> {
        x.to_vec::<f32>()?;
        Ok(x.clone())
    }
    fn parameters(&self) -> Vec<(String, &Tensor)> {
        Vec::new()
    }
    fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        Vec::new()
    }
    fn describe(&self) -> String {
        "PeekOnHost".into()
    }
}

fn a_capture_refuses_host_round_trips_and_leaves_the_device_usable(device: Device) {
    let _device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let mut model = Sequential::new()
        .push(PeekOnHost)
        .push(Flatten)
        .push(Linear::new(81, CLASSES, Init::KaimingNormal, 4, device).unwrap());
    let mut opt = optimizer_for(&model, |p| Box::new(Sgd::new(p, 0.1, 0.0, 0.0).unwrap()));
    let (x, y) = batch(device, &[6, 1, 9, 9], 0);
    let precision = StepPrecision::f32();
    let err = CapturedStep::capture(&mut model, opt.as_mut(), &x, &y, 0, &precision)
        .err()
        .expect("the capture must fail");
    let message = err.to_string();
    assert!(
        message.contains("copy to the host") && message.contains("captured step"),
        "{message}"
    );
    // The warm-up step was taken; the failed capture counted no step and left no capture open.
    assert_eq!(opt.steps(), 1);
    let mut precision = StepPrecision::f32();
    let (x, y) = batch(device, &[6, 1, 9, 9], 1);
    train_step_with(&mut model, opt.as_mut(), &x, &y, 1, &mut precision).unwrap();
    assert_eq!(opt.steps(), 2);
}
kiln::test_device!(
    a_capture_refuses_host_round_trips_and_leaves_the_device_usable,
    gpu
);

fn a_graph_refuses_other_shapes_and_replaced_or_shared_tensors(device: Device) {
    let _device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let (mut model, mut opt, xy) = small_net_with_adam(device);
    let mut graph = capture_at_step_0(&mut model, opt.as_mut(), &xy);
    let (x, y) = xy;
    assert!(graph.can_replay(&model, opt.as_ref(), &x, &y));

    let (small_x, small_y) = batch(device, &[5, 1, 9, 9], 1);
    assert!(!graph.can_replay(&model, opt.as_ref(), &small_x, &small_y));
    let err = graph
        .replay(&mut model, opt.as_mut(), &small_x, &small_y, 1)
        .unwrap_err();
    assert!(matches!(err, TrainError::InvalidArgument { .. }), "{err}");
    assert_eq!(opt.steps(), 1, "a refused replay takes no step");

    // A batch on the host is copied into the graph's input buffers.
    let (host_x, host_y) = batch(Device::Cpu, &[6, 1, 9, 9], 2);
    graph
        .replay(&mut model, opt.as_mut(), &host_x, &host_y, 1)
        .unwrap();

    // A parameter shared with another tensor would see the replay's update.
    let shared = model.parameters()[0].1.clone();
    assert!(!graph.can_replay(&model, opt.as_ref(), &x, &y));
    drop(shared);
    assert!(graph.can_replay(&model, opt.as_ref(), &x, &y));

    // Loading another optimizer's state replaces the tensors: the graph would update the old ones.
    let other = optimizer_for(&model, |p| Box::new(Adam::new(p, 0.01).unwrap()));
    opt.load_state(&other.state()).unwrap();
    drop(other);
    assert!(!graph.can_replay(&model, opt.as_ref(), &x, &y));

    // Plain SGD has no state tensors: another SGD object over the same parameters (with its own
    // weight decay, which the graph does not hold) is told apart by its identity.
    let plain = |wd| -> Box<Optimizer> {
        let params: Vec<Tensor> = model
            .parameters()
            .into_iter()
            .map(|(_, t)| t.clone())
            .collect();
        Box::new(Sgd::new(&params, 0.1, 0.0, wd).unwrap())
    };
    let (mut captured_with, other) = (plain(0.0), plain(0.5));
    let (graph, _) = CapturedStep::capture(
        &mut model,
        captured_with.as_mut(),
        &x,
        &y,
        2,
        &StepPrecision::f32(),
    )
    .unwrap();
    assert!(graph.can_replay(&model, captured_with.as_ref(), &x, &y));
    assert!(!graph.can_replay(&model, other.as_ref(), &x, &y));
}
kiln::test_device!(
    a_graph_refuses_other_shapes_and_replaced_or_shared_tensors,
    gpu
);

/// A graph holds the kernels its capture's policy chose: under another policy `can_replay` says no
/// (so a caller captures again, as `kiln train --cuda-graph` does) and `replay` is an error that
/// takes no step; a step captured under the new policy runs its kernels and replays under it.
fn a_graph_replays_only_under_the_kernel_policy_it_was_captured_with(device: Device) {
    let _device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let flat = KernelPolicy {
        flat_tiles: true,
        ..KernelPolicy::DEFAULT
    };
    let (mut model, mut opt, xy) = small_net_with_adam(device);
    let mut graph = capture_at_step_0(&mut model, opt.as_mut(), &xy);
    assert_eq!(graph.policy(), KernelPolicy::DEFAULT);
    let (x, y) = batch(device, &[6, 1, 9, 9], 1);
    with_kernel_policy(device, flat, || {
        assert!(!graph.can_replay(&model, opt.as_ref(), &x, &y));
        let err = graph
            .replay(&mut model, opt.as_mut(), &x, &y, 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kernel policy default") && err.contains("flat-tiles"),
            "{err}"
        );
    });
    assert_eq!(opt.steps(), 1, "a refused replay takes no step");
    assert!(graph.can_replay(&model, opt.as_ref(), &x, &y));
    graph.replay(&mut model, opt.as_mut(), &x, &y, 1).unwrap();

    // Captured again under flat tiles: the 4-channel convolution's forward takes the 16-row
    // tile, and the graph replays under that policy only.
    let (mut flat_graph, kernels) = with_kernel_policy(device, flat, || {
        count_launches(|| capture_at_step_0(&mut model, opt.as_mut(), &xy))
    });
    assert!(kernels.contains_key("gemm_16x256_f32"), "{kernels:?}");
    assert_eq!(flat_graph.policy(), flat);
    assert!(!flat_graph.can_replay(&model, opt.as_ref(), &x, &y));
    with_kernel_policy(device, flat, || {
        assert!(flat_graph.can_replay(&model, opt.as_ref(), &x, &y));
        flat_graph
            .replay(&mut model, opt.as_mut(), &x, &y, 3)
            .unwrap();
    });
}
kiln::test_device!(
    a_graph_replays_only_under_the_kernel_policy_it_was_captured_with,
    gpu
);

#[test]
fn captures_refuse_host_batches_on_the_cpu_and_f16_loss_scaling() {
    let _device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let mut model = small_net(Device::Cpu);
    let mut opt = optimizer_for(&model, |p| Box::new(Sgd::new(p, 0.1, 0.0, 0.0).unwrap()));
    let (x, y) = batch(Device::Cpu, &[6, 1, 9, 9], 0);
    let err = CapturedStep::capture(&mut model, opt.as_mut(), &x, &y, 0, &StepPrecision::f32())
        .err()
        .expect("CPU");
    assert!(err.to_string().contains("CPU"), "{err}");

    let device = Device::CudaEmulated;
    let mut model = small_net(device);
    let mut opt = optimizer_for(&model, |p| Box::new(Sgd::new(p, 0.1, 0.0, 0.0).unwrap()));
    let (x, y) = batch(device, &[6, 1, 9, 9], 0);
    let f16 = StepPrecision::new(Precision::F16);
    let err = CapturedStep::capture(&mut model, opt.as_mut(), &x, &y, 0, &f16)
        .err()
        .expect("f16");
    assert!(err.to_string().contains("loss scaler"), "{err}");
    assert_eq!(opt.steps(), 0, "nothing was trained");
}

/// Plain SGD written outside kiln: `w −= lr·g` with a generic kernel that takes the learning rate
/// as a host value, which a replayed graph would keep.
struct HandSgd;

impl kiln::optim::UpdateRule for HandSgd {
    fn name(&self) -> &'static str {
        "hand_sgd"
    }
    fn state_names(&self) -> &'static [&'static str] {
        &[]
    }
    fn update(
        &self,
        w: &mut Tensor,
        g: &Tensor,
        _: &mut [Tensor],
        step: kiln::optim::Step,
    ) -> kiln::Result<()> {
        kiln::backend::axpby_in_place(1.0, w, -step.lr, g)
    }
}

fn a_capture_refuses_an_update_rule_written_outside_kiln(device: Device) {
    let _device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let mut model = small_net(device);
    let mut opt = optimizer_for(&model, |p| {
        Box::new(Optimizer::with_rule(p, 0.1, HandSgd).unwrap())
    });
    let before = snapshot(&model, opt.as_ref());
    let (x, y) = batch(device, &[6, 1, 9, 9], 0);
    let err = CapturedStep::capture(&mut model, opt.as_mut(), &x, &y, 0, &StepPrecision::f32())
        .err()
        .expect("the capture must fail");
    assert!(matches!(err, TrainError::InvalidArgument { .. }), "{err}");
    assert!(err.to_string().contains("hand_sgd"), "{err}");
    // Refused before the warm-up step: nothing trained.
    assert_eq!(opt.steps(), 0);
    assert_eq!(snapshot(&model, opt.as_ref()), before);
    // The rule trains eagerly on the device.
    let mut precision = StepPrecision::f32();
    train_step_with(&mut model, opt.as_mut(), &x, &y, 0, &mut precision).unwrap();
    assert_eq!(opt.steps(), 1);
}
kiln::test_device!(a_capture_refuses_an_update_rule_written_outside_kiln, gpu);
