//! A whole network — conv, batch norm, ReLU, max-pool, a residual connection, global average
//! pooling, linear, softmax cross-entropy — passes the f64 gradient check, and its GPU gradients
//! match the CPU's.

use kiln::ops::{self, BatchNorm2d};
use kiln::testing::{check_parity, gradcheck, random_vec};
use kiln::{DType, Device, Tensor, Window2d};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Inputs: x, conv1 w/b, bn gamma/beta, conv2 w, fc w/b. Returns the mean cross-entropy.
fn network(t: &[Tensor], labels: &Tensor) -> kiln::Result<Tensor> {
    let (x, w1, b1, gamma, beta, w2, fc_w, fc_b) =
        (&t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7]);
    let mut bn = BatchNorm2d::with_dtype(4, x.dtype(), x.device())?;
    bn.gamma = gamma.clone();
    bn.beta = beta.clone();
    let h = ops::conv2d(x, w1, Some(b1), Window2d::square(3, 1, 1))?;
    let h = ops::relu(&bn.forward(&h, true)?)?;
    let h = ops::max_pool2d(&h, Window2d::square(2, 2, 0))?;
    // Residual block: h + conv(relu(h)); gradients add where h branches.
    let branch = ops::conv2d(&ops::relu(&h)?, w2, None, Window2d::square(3, 1, 1))?;
    let h = ops::add(&h, &branch)?;
    let h = ops::flatten(&ops::global_avg_pool2d(&h)?)?;
    let logits = ops::linear(&h, fc_w, Some(fc_b))?;
    ops::softmax_cross_entropy(&logits, labels)
}

fn inputs(dtype: DType) -> Vec<Tensor> {
    let shapes: [&[usize]; 8] = [
        &[3, 3, 6, 6],
        &[4, 3, 3, 3],
        &[4],
        &[4],
        &[4],
        &[4, 4, 3, 3],
        &[5, 4],
        &[5],
    ];
    let mut rng = StdRng::seed_from_u64(11);
    shapes
        .iter()
        .map(|s| {
            let v: Vec<f64> = random_vec(&mut rng, s.iter().product());
            Tensor::from_vec(v, s, Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        })
        .collect()
}

fn labels(device: Device) -> Tensor {
    Tensor::from_vec(vec![4i32, 0, 2], &[3], device).unwrap()
}

#[test]
fn whole_network_gradients_pass_the_f64_check() {
    let labels = labels(Device::Cpu);
    gradcheck(
        "conv-bn-relu-pool-residual-linear",
        &inputs(DType::F64),
        |t| network(t, &labels),
    );
}

fn whole_network_gradients_match_on_every_device(device: Device) {
    check_parity(
        "conv-bn-relu-pool-residual-linear",
        device,
        &inputs(DType::F32),
        1e-5,
        1e-4,
        |t| network(t, &labels(t[0].device())),
    );
}
kiln::test_device!(whole_network_gradients_match_on_every_device, gpu);
