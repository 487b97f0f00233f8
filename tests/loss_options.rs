//! Softmax cross-entropy with label smoothing and class weights (`ops::CrossEntropy`,
//! `ops::softmax_cross_entropy_with`): PyTorch's values and gradients, the default options as the
//! fused path, CPU-vs-device parity on odd sizes, 16-bit logits, and bad options as errors.

use kiln::ops::CrossEntropy;
use kiln::testing::{assert_close, check_parity, random_vec};
use kiln::{ops, DType, Device, Error, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn tensor<T: kiln::Element>(values: Vec<T>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(values, shape, Device::Cpu).unwrap()
}

const LOGITS: [f64; 12] = [
    2.0, -1.0, 0.5, 3.0, 0.1, 0.2, -0.3, 1.5, -2.0, 4.0, 1.0, 0.0,
];
const LABELS: [i32; 3] = [3, 0, 1];
const WEIGHTS: [f64; 4] = [0.5, 2.0, 1.0, 3.0];

/// The options of the PyTorch snippet below, with its loss and gradient:
/// ```python
/// z = torch.tensor([[2., -1., .5, 3.], [.1, .2, -.3, 1.5], [-2., 4., 1., 0.]], dtype=torch.float64,
///                  requires_grad=True)
/// y = torch.tensor([3, 0, 1]); w = torch.tensor([.5, 2., 1., 3.], dtype=torch.float64)
/// for kw in [dict(weight=w, label_smoothing=.1), dict(label_smoothing=.2), dict(weight=w)]:
///     z.grad = None; l = F.cross_entropy(z, y, reduction="mean", **kw); l.backward()
///     print(l.item(), z.grad.flatten().tolist())   # PyTorch 2.15
/// ```
fn torch_cases() -> Vec<(CrossEntropy, f64, [f64; 12])> {
    let weighted = Some(WEIGHTS.to_vec());
    vec![
        (
            CrossEntropy {
                label_smoothing: 0.1,
                class_weights: weighted.clone(),
            },
            0.5518512882515119,
            [
                0.12812782103993015,
                -0.0025986480768598707,
                0.024550840682991758,
                -0.15008001364606208,
                -0.06778748715463787,
                0.008927158698174436,
                0.006383055997405237,
                0.05247727245905819,
                -0.0014465744965301579,
                -0.003069818621760593,
                0.012048267545046603,
                -0.007531874426755854,
            ],
        ),
        (
            CrossEntropy {
                label_smoothing: 0.2,
                class_weights: None,
            },
            1.1145731506182621,
            [
                0.06685042395570491,
                -0.012508595565965563,
                0.0019685151390340244,
                -0.05631034352877337,
                -0.23453397515673918,
                0.03726496481086225,
                0.016044521352777577,
                0.18122448899309931,
                -0.015894889126270212,
                0.028023948633599492,
                -0.0011651003825466954,
                -0.010963959124782537,
            ],
        ),
        (
            CrossEntropy {
                label_smoothing: 0.0,
                class_weights: weighted,
            },
            0.4089803382741237,
            [
                0.1366643301093353,
                0.006804116346601804,
                0.03049393386387386,
                -0.17396238031981096,
                -0.07760017504274705,
                0.014708626766598797,
                0.008921233096212067,
                0.05397031517993618,
                0.000841939134977952,
                -0.023973874217891454,
                0.016910799582676335,
                0.006221135500237234,
            ],
        ),
    ]
}

fn labels_on(values: &[i32], device: Device) -> Tensor {
    tensor(values.to_vec(), &[values.len()])
        .to_device(device)
        .unwrap()
}

/// Loss and gradient of the options on `logits`, read back as f64.
fn loss_and_grad(logits: &Tensor, labels: &Tensor, options: &CrossEntropy) -> (f64, Vec<f64>) {
    let z = logits.detach().with_grad();
    let loss = ops::softmax_cross_entropy_with(&z, labels, options).unwrap();
    assert_eq!(loss.shape(), [] as [usize; 0]);
    let grads = loss.backward().unwrap();
    let on_cpu = |t: &kiln::backend::RawTensor| {
        let t = t.to_device(Device::Cpu).unwrap();
        t.to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap()
    };
    (on_cpu(&loss)[0], on_cpu(grads.get(&z).unwrap()))
}

#[test]
fn f64_values_equal_pytorchs() {
    let logits = tensor(LOGITS.to_vec(), &[3, 4]);
    let labels = labels_on(&LABELS, Device::Cpu);
    for (options, loss, grad) in torch_cases() {
        let (l, g) = loss_and_grad(&logits, &labels, &options);
        assert_close(&[l], &[loss], 1e-14, 1e-13);
        assert_close(&g, &grad, 1e-14, 1e-12);
    }
}

/// The same in f32 on every device (the smoothing kernels on a device).
fn f32_values_follow_pytorch(device: Device) {
    let logits = tensor(LOGITS.map(|v| v as f32).to_vec(), &[3, 4])
        .to_device(device)
        .unwrap();
    let labels = labels_on(&LABELS, device);
    for (options, loss, grad) in torch_cases() {
        let (l, g) = loss_and_grad(&logits, &labels, &options);
        assert_close(&[l], &[loss], 1e-6, 1e-6);
        assert_close(&g, &grad, 1e-7, 1e-5);
    }
}
kiln::test_device!(f32_values_follow_pytorch);

/// The default options are `softmax_cross_entropy`, bit for bit.
#[test]
fn default_options_are_the_fused_loss() {
    let logits = tensor(LOGITS.map(|v| v as f32).to_vec(), &[3, 4]);
    let labels = labels_on(&LABELS, Device::Cpu);
    let plain = ops::softmax_cross_entropy(&logits, &labels).unwrap();
    let with = ops::softmax_cross_entropy_with(&logits, &labels, &CrossEntropy::default()).unwrap();
    assert_eq!(
        plain.to_vec::<f32>().unwrap(),
        with.to_vec::<f32>().unwrap()
    );
}

/// Weights of 1 and no smoothing through the smoothing kernels equal the fused loss; weights
/// scaled by a constant change nothing (the mean divides by their sum over the labels).
#[test]
fn unit_weights_and_scaled_weights_agree() {
    let logits = tensor(LOGITS.to_vec(), &[3, 4]);
    let labels = labels_on(&LABELS, Device::Cpu);
    let plain = loss_and_grad(&logits, &labels, &CrossEntropy::default());
    let ones = CrossEntropy {
        label_smoothing: 0.0,
        class_weights: Some(vec![1.0; 4]),
    };
    let unit = loss_and_grad(&logits, &labels, &ones);
    assert_close(&[unit.0], &[plain.0], 1e-14, 1e-13);
    assert_close(&unit.1, &plain.1, 1e-15, 1e-12);
    let w = |scale: f64| CrossEntropy {
        label_smoothing: 0.3,
        class_weights: Some(WEIGHTS.iter().map(|w| w * scale).collect()),
    };
    let (a, b) = (
        loss_and_grad(&logits, &labels, &w(1.0)),
        loss_and_grad(&logits, &labels, &w(7.0)),
    );
    assert_close(&[a.0], &[b.0], 1e-14, 1e-13);
    assert_close(&a.1, &b.1, 1e-15, 1e-12);
}

/// Random f32 logits [rows, classes] in (−3, 3), labels in 0..classes, and weights in [0, 2)
/// (one class weighted 0).
fn random_case(rows: usize, classes: usize, seed: u64) -> (Tensor, Tensor, Vec<f64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let z: Vec<f32> = random_vec::<f32>(&mut rng, rows * classes)
        .into_iter()
        .map(|v| 3.0 * v)
        .collect();
    let labels: Vec<i32> = (0..rows)
        .map(|_| rng.random_range(0..classes as i32))
        .collect();
    let mut weights: Vec<f64> = (0..classes).map(|_| rng.random_range(0.0..2.0)).collect();
    weights[classes / 2] = 0.0;
    (
        tensor(z, &[rows, classes]),
        tensor(labels, &[rows]),
        weights,
    )
}

/// The kernels against the CPU on odd sizes: short rows, and rows longer than a 256-thread block.
fn smoothed_weighted_matches_cpu(device: Device) {
    for (i, (rows, classes)) in [(37, 13), (5, 300), (1, 2), (9, 1)].into_iter().enumerate() {
        let (z, labels, weights) = random_case(rows, classes, 40 + i as u64);
        let labels_dev = labels.to_device(device).unwrap();
        for options in [
            CrossEntropy {
                label_smoothing: 0.1,
                class_weights: Some(weights.clone()),
            },
            CrossEntropy {
                label_smoothing: 0.25,
                class_weights: None,
            },
        ] {
            let lab = labels.clone();
            let on_cpu = ops::softmax_cross_entropy_with(&z, &lab, &options);
            if on_cpu.is_err() {
                continue; // every label weighted 0 (rows of one class with weight 0)
            }
            check_parity(
                "softmax_cross_entropy_with",
                device,
                std::slice::from_ref(&z),
                1e-5,
                1e-4,
                |t| {
                    let labels = if t[0].device() == Device::Cpu {
                        &labels
                    } else {
                        &labels_dev
                    };
                    ops::softmax_cross_entropy_with(&t[0], labels, &options)
                },
            );
        }
    }
}
kiln::test_device!(smoothed_weighted_matches_cpu, gpu);

/// 16-bit logits are widened to f32 on the tape, as for the fused loss.
fn bf16_logits_are_widened(device: Device) {
    let logits = tensor(LOGITS.map(|v| v as f32).to_vec(), &[3, 4])
        .to_device(device)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    let (options, loss, _) = torch_cases().remove(0);
    let labels = labels_on(&LABELS, device);
    let l = ops::softmax_cross_entropy_with(&logits, &labels, &options).unwrap();
    assert_eq!(l.dtype(), DType::F32);
    // The f32 loss of the bf16-rounded logits, and PyTorch's to bf16's rounding of the logits.
    let widened = logits.to_dtype(DType::F32).unwrap();
    let reference = ops::softmax_cross_entropy_with(&widened, &labels, &options).unwrap();
    let l = l.to_vec::<f32>().unwrap();
    assert_close(&l, &reference.to_vec::<f32>().unwrap(), 1e-7, 1e-7);
    assert_close(&l, &[loss as f32], 1e-3, 1e-2);
}
kiln::test_device!(bf16_logits_are_widened);

fn assert_invalid(result: kiln::Result<Tensor>, what: &str) {
    match result {
        Err(Error::InvalidArgument { .. }) => {}
        other => panic!("{what}: expected an InvalidArgument error, got {other:?}"),
    }
}

#[test]
fn bad_options_are_errors() {
    let logits = tensor(LOGITS.to_vec(), &[3, 4]);
    let labels = labels_on(&LABELS, Device::Cpu);
    let run = |eps: f64, w: Option<Vec<f64>>| {
        let options = CrossEntropy {
            label_smoothing: eps,
            class_weights: w,
        };
        ops::softmax_cross_entropy_with(&logits, &labels, &options)
    };
    for eps in [-0.1, 1.0, 1.5, f64::NAN, f64::INFINITY] {
        assert_invalid(run(eps, None), &format!("label smoothing {eps}"));
    }
    assert_invalid(run(0.1, Some(vec![1.0; 3])), "3 weights for 4 classes");
    assert_invalid(run(0.0, Some(vec![1.0; 5])), "5 weights for 4 classes");
    assert_invalid(
        run(0.1, Some(vec![1.0, -1.0, 1.0, 1.0])),
        "a negative weight",
    );
    assert_invalid(
        run(0.1, Some(vec![1.0, f64::NAN, 1.0, 1.0])),
        "a NaN weight",
    );
    assert_invalid(
        run(0.1, Some(vec![1.0, 1.0, f64::INFINITY, 1.0])),
        "an infinite weight",
    );
    // The labels are 3, 0, 1: their weights are all 0 though class 2's is not.
    assert_invalid(
        run(0.1, Some(vec![0.0, 0.0, 1.0, 0.0])),
        "labels weighted 0",
    );
    assert!(run(0.1, Some(vec![0.0, 0.0, 1.0, 1.0])).is_ok());
    let bad_label = labels_on(&[3, 4, 1], Device::Cpu);
    let options = CrossEntropy {
        label_smoothing: 0.1,
        class_weights: None,
    };
    assert_invalid(
        ops::softmax_cross_entropy_with(&logits, &bad_label, &options),
        "label 4 of 4 classes",
    );
    let flat = logits.reshape(&[12]).unwrap();
    assert_invalid(
        ops::softmax_cross_entropy_with(&flat, &labels, &options),
        "1-d logits",
    );
}
