//! Mixed precision (`kiln::autocast`): convolution, transposed convolution and linear layers
//! multiply operands rounded to bf16/f16 with f32 accumulation, forward and backward; the CPU and
//! every device under test agree, the products match f64 products of the rounded operands, and
//! the mode is scoped, validated and captured by each operation for its backward pass.

use kiln::testing::{assert_close, check_parity};
use kiln::{autocast, backend, ops, DType, Device, GemmSpec, Tensor, Window2d};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, seed, Device::Cpu).unwrap()
}

/// x with each value rounded to `format` and widened back to f32, then to f64.
fn rounded_f64(x: &Tensor, format: DType) -> Tensor {
    let r = backend::cast(&backend::cast(x, format).unwrap(), DType::F32).unwrap();
    Tensor::from(r.to_dtype(DType::F64).unwrap())
}

#[test]
fn autocast_products_are_f64_products_of_rounded_operands() {
    let x = randn(&[3, 4, 9, 7], 1);
    let w = randn(&[6, 2, 3, 3], 2);
    let window = Window2d::square(3, 1, 1);
    for format in [DType::BF16, DType::F16] {
        let conv = |x: &Tensor, w: &Tensor| ops::conv2d_groups(x, w, None, window, 2).unwrap();
        let mixed = autocast(format, || conv(&x, &w))
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let exact: Vec<f32> = conv(&rounded_f64(&x, format), &rounded_f64(&w, format))
            .to_vec::<f64>()
            .unwrap()
            .iter()
            .map(|&v| v as f32)
            .collect();
        assert_close(&mixed, &exact, 1e-5, 1e-5);
        // And the rounding is really there: plain f32 differs from it by bf16/f16-sized errors.
        let plain = conv(&x, &w).to_vec::<f32>().unwrap();
        let worst = plain
            .iter()
            .zip(&mixed)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            worst > 1e-4,
            "{format:?}: autocast changed nothing (worst difference {worst})"
        );

        let (xl, wl) = (randn(&[5, 33], 3), randn(&[7, 33], 4));
        let mixed = autocast(format, || ops::linear(&xl, &wl, None).unwrap()).unwrap();
        let exact =
            ops::linear(&rounded_f64(&xl, format), &rounded_f64(&wl, format), None).unwrap();
        let exact: Vec<f32> = exact
            .to_vec::<f64>()
            .unwrap()
            .iter()
            .map(|&v| v as f32)
            .collect();
        assert_close(&mixed.to_vec::<f32>().unwrap(), &exact, 1e-5, 1e-5);
    }
}

fn autocast_layers_forward_and_backward_agree_on_every_device(device: Device) {
    // f32 sums of a few hundred bf16 products in different orders.
    let (atol, rtol) = (1e-4, 1e-4);
    for format in [DType::BF16, DType::F16] {
        let inputs = [
            randn(&[2, 4, 7, 9], 10),
            randn(&[6, 2, 3, 3], 11),
            randn(&[6], 12),
        ];
        check_parity("autocast conv2d", device, &inputs, atol, rtol, |t| {
            let window = Window2d::square(3, 2, 1).floored();
            autocast(format, || {
                ops::conv2d_groups(&t[0], &t[1], Some(&t[2]), window, 2)
            })?
        });
        let inputs = [randn(&[2, 4, 5, 6], 13), randn(&[4, 3, 3, 3], 14)];
        check_parity(
            "autocast conv_transpose2d",
            device,
            &inputs,
            atol,
            rtol,
            |t| {
                let window = Window2d::square(3, 2, 1);
                autocast(format, || {
                    ops::conv_transpose2d(&t[0], &t[1], None, window, (1, 1), 1)
                })?
            },
        );
        let inputs = [randn(&[9, 21], 15), randn(&[5, 21], 16), randn(&[5], 17)];
        check_parity("autocast linear", device, &inputs, atol, rtol, |t| {
            autocast(format, || ops::linear(&t[0], &t[1], Some(&t[2])))?
        });
    }
}
kiln::test_device!(
    autocast_layers_forward_and_backward_agree_on_every_device,
    gpu
);

#[test]
fn backward_uses_the_precision_of_the_forward_pass() {
    let x = randn(&[4, 10], 20).with_grad();
    let w = randn(&[3, 10], 21).with_grad();
    let dy_weights = randn(&[4, 3], 22);
    let grads_of = |y: Tensor| {
        let loss = ops::sum(&ops::mul(&y, &dy_weights).unwrap()).unwrap();
        let g = loss.backward().unwrap();
        g.get(&w).unwrap().to_vec::<f32>().unwrap()
    };
    // Forward under autocast, backward outside it: the weight gradient still uses rounded
    // operands (dW = dyᵀ·x with dy and x in bf16).
    let y = autocast(DType::BF16, || ops::linear(&x, &w, None).unwrap()).unwrap();
    let mixed = grads_of(y);
    let dw_spec = GemmSpec::new(3, 10, 4).transpose_a();
    let (dy_r, x_r) = (
        rounded_f64(&dy_weights, DType::BF16),
        rounded_f64(&x.detach(), DType::BF16),
    );
    let exact_dw = backend::gemm(&dw_spec, 1.0, &dy_r, &x_r, vec![3, 10]).unwrap();
    let exact: Vec<f32> = exact_dw
        .to_vec::<f64>()
        .unwrap()
        .iter()
        .map(|&v| v as f32)
        .collect();
    assert_close(&mixed, &exact, 1e-5, 1e-5);
    let plain = grads_of(ops::linear(&x, &w, None).unwrap());
    assert!(plain.iter().zip(&mixed).any(|(a, b)| (a - b).abs() > 1e-4));
}

#[test]
fn autocast_is_scoped_and_validated() {
    assert_eq!(kiln::autocast::current(), None);
    autocast(DType::BF16, || {
        assert_eq!(kiln::autocast::current(), Some(DType::BF16));
        autocast(DType::F16, || {
            assert_eq!(kiln::autocast::current(), Some(DType::F16))
        })
        .unwrap();
        assert_eq!(kiln::autocast::current(), Some(DType::BF16));
    })
    .unwrap();
    assert_eq!(kiln::autocast::current(), None);
    let err = autocast(DType::F64, || ()).unwrap_err();
    assert!(err.to_string().contains("BF16"), "{err}");
    // Restored after a panic too.
    let _ = std::panic::catch_unwind(|| autocast(DType::BF16, || panic!("inside")));
    assert_eq!(kiln::autocast::current(), None);
}
