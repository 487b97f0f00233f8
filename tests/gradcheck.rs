//! Finite-difference gradient checks in f64 on the CPU: every layer's backward against central
//! differences of the scalar L = Σ y ⊙ r for a fixed random r (so dL/dy = r).

use kiln::testing::random_vec;
use kiln::{ops, Device, Tensor, Window2d};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

const EPS: f64 = 1e-6;

fn tensor(data: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape, Device::Cpu).unwrap()
}

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    tensor(random_vec(&mut rng, shape.iter().product()), shape)
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
    a.iter().zip(&b).map(|(x, y)| x * y).sum()
}

/// Compares `analytic` with central differences of `loss` with respect to `input`.
#[track_caller]
fn check(name: &str, input: &Tensor, analytic: &Tensor, loss: impl Fn(&Tensor) -> f64) {
    let base = input.to_vec::<f64>().unwrap();
    let grad = analytic.to_vec::<f64>().unwrap();
    assert_eq!(base.len(), grad.len(), "{name}: gradient size");
    let mut worst = 0.0f64;
    for i in 0..base.len() {
        let at = |delta: f64| {
            let mut v = base.clone();
            v[i] += delta;
            loss(&tensor(v, input.shape()))
        };
        let numeric = (at(EPS) - at(-EPS)) / (2.0 * EPS);
        let err = (numeric - grad[i]).abs();
        worst = worst.max(err);
        assert!(
            err <= 1e-6 + 1e-5 * numeric.abs(),
            "{name}[{i}]: analytic {} vs numeric {numeric}",
            grad[i]
        );
    }
    eprintln!("{name}: {} entries, worst error {worst:e}", base.len());
}

#[test]
fn conv2d_gradients() {
    let cases = [
        ([2, 3, 7, 9], 4, Window2d::square(3, 2, 1)),
        ([1, 2, 9, 8], 3, Window2d::square(3, 1, 2).with_dilation(2)),
        ([3, 2, 5, 5], 2, Window2d::square(1, 1, 0)),
    ];
    for (i, (shape, k, window)) in cases.into_iter().enumerate() {
        let seed = 10 * i as u64;
        let x = random(&shape, seed);
        let w = random(&[k, shape[1], window.kernel.0, window.kernel.1], seed + 1);
        let b = random(&[k], seed + 2);
        let fwd = ops::conv2d(&x, &w, Some(&b), window).unwrap();
        let r = random(fwd.y.shape(), seed + 3);
        let grads = ops::conv2d_backward(&r, &w, &fwd, true).unwrap();
        let loss = |x: &Tensor, w: &Tensor, b: &Tensor| {
            dot(&ops::conv2d(x, w, Some(b), window).unwrap().y, &r)
        };
        check("conv2d dx", &x, &grads.dx, |x| loss(x, &w, &b));
        check("conv2d dw", &w, &grads.dw, |w| loss(&x, w, &b));
        check("conv2d db", &b, grads.db.as_ref().unwrap(), |b| {
            loss(&x, &w, b)
        });
    }
}

#[test]
fn max_pool_gradients() {
    // Distinct values 0.01 apart, shuffled: a perturbation of EPS never changes a window's winner,
    // so no input sits within the kink band.
    let shape = [2, 3, 7, 9];
    let n: usize = shape.iter().product();
    let mut values: Vec<f64> = (0..n).map(|i| i as f64 * 0.01 - 1.0).collect();
    values.shuffle(&mut StdRng::seed_from_u64(3));
    let x = tensor(values, &shape);
    for window in [
        Window2d::square(2, 2, 0),
        Window2d::square(3, 2, 1),
        Window2d::square(2, 3, 0),
    ] {
        let fwd = ops::max_pool2d(&x, window).unwrap();
        let r = random(fwd.y.shape(), 4);
        let dx = ops::max_pool2d_backward(&r, &fwd).unwrap();
        check("max_pool2d dx", &x, &dx, |x| {
            dot(&ops::max_pool2d(x, window).unwrap().y, &r)
        });
    }
}

#[test]
fn relu_gradients_away_from_the_kink() {
    let mut rng = StdRng::seed_from_u64(5);
    let values: Vec<f64> = random_vec::<f64>(&mut rng, 3 * 5 * 7)
        .into_iter()
        .map(|v| {
            if v.abs() < 0.05 {
                v.signum() * 0.05 + v
            } else {
                v
            }
        })
        .collect();
    let x = tensor(values, &[3, 5, 7]);
    let fwd = ops::relu(&x).unwrap();
    let r = random(&[3, 5, 7], 6);
    let dx = ops::relu_backward(&r, &fwd).unwrap();
    check("relu dx", &x, &dx, |x| dot(&ops::relu(x).unwrap().y, &r));
}

#[test]
fn linear_gradients() {
    let x = random(&[5, 7], 1);
    let w = random(&[3, 7], 2);
    let b = random(&[3], 3);
    let r = random(&[5, 3], 4);
    let grads = ops::linear_backward(&r, &x, &w, true).unwrap();
    let loss = |x: &Tensor, w: &Tensor, b: &Tensor| dot(&ops::linear(x, w, Some(b)).unwrap(), &r);
    check("linear dx", &x, &grads.dx, |x| loss(x, &w, &b));
    check("linear dw", &w, &grads.dw, |w| loss(&x, w, &b));
    check("linear db", &b, grads.db.as_ref().unwrap(), |b| {
        loss(&x, &w, b)
    });
}

#[test]
fn softmax_cross_entropy_gradients() {
    let logits = random(&[4, 7], 1);
    let labels = Tensor::from_vec(vec![0i32, 6, 3, 3], &[4], Device::Cpu).unwrap();
    let fwd = ops::softmax_cross_entropy(&logits, &labels).unwrap();
    let d = ops::softmax_cross_entropy_backward(&fwd, 1.0).unwrap();
    check("softmax_cross_entropy dlogits", &logits, &d, |z| {
        ops::softmax_cross_entropy(z, &labels)
            .unwrap()
            .loss
            .scalar()
            .unwrap()
    });
}
