//! Synchronized batch norm (`ops::BatchNorm2d::synchronize`): replicas on threads, each holding a
//! shard of one batch and summing through an in-process [`ReplicaSum`], against plain batch norm
//! over the whole batch. Uneven shards (5 and 3 images) and a large mean single out a wrong
//! combination of the shards' statistics (an unweighted mean, a variance without the shards'
//! spread about the whole mean); the gradients check that backward sums over the replicas for dx
//! and keeps each shard's own dγ and dβ.

use std::sync::{Arc, Barrier, Mutex};

use kiln::backend::RawTensor;
use kiln::ops::{self, BatchNorm2d, ReplicaSum};
use kiln::testing::random_vec;
use kiln::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The replicas' shared mailbox: one slot per replica, and a barrier for all of them.
#[derive(Debug)]
struct Mailbox {
    slots: Mutex<Vec<Vec<f64>>>,
    barrier: Barrier,
}

/// Replica `rank`'s view of the mailbox: sums in rank order (the same on every replica), in f64.
#[derive(Debug)]
struct ThreadSum {
    rank: usize,
    mailbox: Arc<Mailbox>,
}

fn replicas(n: usize) -> Vec<Arc<dyn ReplicaSum>> {
    let mailbox = Arc::new(Mailbox {
        slots: Mutex::new(vec![Vec::new(); n]),
        barrier: Barrier::new(n),
    });
    (0..n)
        .map(|rank| {
            let sum = ThreadSum {
                rank,
                mailbox: Arc::clone(&mailbox),
            };
            Arc::new(sum) as Arc<dyn ReplicaSum>
        })
        .collect()
}

impl ThreadSum {
    fn exchange(&self, mine: Vec<f64>) -> Vec<f64> {
        self.mailbox.slots.lock().unwrap()[self.rank] = mine;
        self.mailbox.barrier.wait();
        let summed = {
            let slots = self.mailbox.slots.lock().unwrap();
            let mut summed = vec![0.0; slots[0].len()];
            for slot in slots.iter() {
                assert_eq!(slot.len(), summed.len(), "replicas sum different lengths");
                summed.iter_mut().zip(slot).for_each(|(s, v)| *s += v);
            }
            summed
        };
        self.mailbox.barrier.wait(); // nobody writes the next call's values before all have read
        summed
    }
}

impl ReplicaSum for ThreadSum {
    fn count(&self, local: usize) -> kiln::Result<usize> {
        Ok(self.exchange(vec![local as f64])[0] as usize)
    }

    fn values(&self, locals: &[&RawTensor]) -> kiln::Result<Vec<RawTensor>> {
        let mut mine = Vec::new();
        for local in locals {
            mine.extend(
                local
                    .to_device(Device::Cpu)?
                    .to_dtype(DType::F64)?
                    .to_vec::<f64>()?,
            );
        }
        let mut rest = &self.exchange(mine)[..];
        let mut sums = Vec::new();
        for local in locals {
            let (values, tail) = rest.split_at(local.numel());
            rest = tail;
            let sum = RawTensor::from_vec(values.to_vec(), local.shape(), Device::Cpu)?
                .to_dtype(local.dtype())?
                .to_device(local.device())?;
            sums.push(sum);
        }
        Ok(sums)
    }
}

/// `offset + spread·u`, u uniform in [-1, 1), as f64 on the CPU.
fn random(shape: &[usize], seed: u64, offset: f64, spread: f64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    random_vec::<f64>(&mut rng, shape.iter().product())
        .into_iter()
        .map(|v| offset + spread * v)
        .collect()
}

/// What one replica (or the whole batch) ends a training step with, as f64 on the host.
#[derive(Debug)]
struct Step {
    y: Vec<f64>,
    dx: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
    running_mean: Vec<f64>,
    running_var: Vec<f64>,
}

fn host(t: &Tensor) -> Vec<f64> {
    t.to_device(Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec::<f64>())
        .unwrap()
}

fn on(values: &[f64], shape: &[usize], dtype: DType, device: Device) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape, Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .and_then(|t| t.to_device(device))
        .unwrap()
}

/// One training step of a batch norm with γ and β given, on `x`, for the loss Σ r ⊙ y.
fn step(
    x: &Tensor,
    r: &Tensor,
    (gamma, beta): (&Tensor, &Tensor),
    sync: Option<Arc<dyn ReplicaSum>>,
) -> kiln::Result<Step> {
    let channels = gamma.numel();
    let mut bn = BatchNorm2d::with_dtype(channels, gamma.dtype(), gamma.device())?;
    bn.gamma = gamma.detach().with_grad();
    bn.beta = beta.detach().with_grad();
    bn.synchronize(sync);
    let x = x.detach().with_grad();
    let y = bn.forward(&x, true)?;
    let grads = ops::sum(&ops::mul(&y, r)?)?.backward()?;
    let grad = |t: &Tensor| host(grads.get(t).expect("a gradient"));
    Ok(Step {
        y: host(&y),
        dx: grad(&x),
        dgamma: grad(&bn.gamma),
        dbeta: grad(&bn.beta),
        running_mean: host(bn.running_mean()),
        running_var: host(bn.running_var()),
    })
}

/// The images of each shard: `sizes` images each, in order.
fn split(values: &[f64], image: usize, sizes: &[usize]) -> Vec<Vec<f64>> {
    let mut rest = values;
    sizes
        .iter()
        .map(|&n| {
            let (mine, tail) = rest.split_at(n * image);
            rest = tail;
            mine.to_vec()
        })
        .collect()
}

#[track_caller]
fn assert_near(what: &str, actual: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tol * (1.0 + e.abs()),
            "{what}[{i}]: {a} vs {e} (whole batch)"
        );
    }
}

/// The batch [sizes.sum(), 3, 4, 5] split into shards of `sizes` images, each on its own thread.
fn shards_against_the_whole_batch(sizes: &[usize], dtype: DType, device: Device, tol: f64) {
    let (c, h, w) = (3, 4, 5);
    let n: usize = sizes.iter().sum();
    let image = c * h * w;
    let shape = [n, c, h, w];
    // A mean of 3 and spreads that differ between the images of the two shards.
    let x = random(&shape, 1, 3.0, 2.0);
    let r = random(&shape, 2, 0.0, 1.0);
    let gamma = on(&random(&[c], 3, 1.0, 0.5), &[c], dtype, device);
    let beta = on(&random(&[c], 4, 0.0, 1.0), &[c], dtype, device);
    let whole = step(
        &on(&x, &shape, dtype, device),
        &on(&r, &shape, dtype, device),
        (&gamma, &beta),
        None,
    )
    .unwrap();

    let shards: Vec<Step> = std::thread::scope(|scope| {
        let running: Vec<_> = split(&x, image, sizes)
            .into_iter()
            .zip(split(&r, image, sizes))
            .zip(sizes.iter().zip(replicas(sizes.len())))
            .map(|((x, r), (&images, sum))| {
                let (gamma, beta) = (&gamma, &beta);
                scope.spawn(move || {
                    let shape = [images, c, h, w];
                    let (x, r) = (on(&x, &shape, dtype, device), on(&r, &shape, dtype, device));
                    step(&x, &r, (gamma, beta), Some(sum)).unwrap()
                })
            })
            .collect();
        running.into_iter().map(|t| t.join().unwrap()).collect()
    });

    let joined = |part: fn(&Step) -> &Vec<f64>| -> Vec<f64> {
        shards.iter().flat_map(|s| part(s).clone()).collect()
    };
    assert_near("y", &joined(|s| &s.y), &whole.y, tol);
    assert_near("dx", &joined(|s| &s.dx), &whole.dx, tol);
    let summed = |part: fn(&Step) -> &Vec<f64>| -> Vec<f64> {
        (0..c)
            .map(|i| shards.iter().map(|s| part(s)[i]).sum())
            .collect()
    };
    assert_near("Σ dγ", &summed(|s| &s.dgamma), &whole.dgamma, tol);
    assert_near("Σ dβ", &summed(|s| &s.dbeta), &whole.dbeta, tol);
    for s in &shards {
        assert_near("running mean", &s.running_mean, &whole.running_mean, tol);
        assert_near("running var", &s.running_var, &whole.running_var, tol);
    }
    // Each shard's dγ is its own part of the sum, not the whole batch's (DDP averages them).
    assert!(
        shards
            .iter()
            .all(|s| (s.dgamma[0] - whole.dgamma[0]).abs() > tol * (1.0 + whole.dgamma[0].abs())),
        "a shard's dγ {:?} should differ from the whole batch's {:?}",
        shards[0].dgamma,
        whole.dgamma
    );
}

/// In f64 on the CPU to 1e-12; in f32 on a GPU to 1e-5 (the shards' sums reassociate).
fn uneven_shards_normalize_and_differentiate_as_the_whole_batch(device: Device) {
    match device {
        Device::Cpu => shards_against_the_whole_batch(&[5, 3], DType::F64, device, 1e-12),
        gpu => shards_against_the_whole_batch(&[5, 3], DType::F32, gpu, 1e-5),
    }
}
kiln::test_device!(uneven_shards_normalize_and_differentiate_as_the_whole_batch);

/// A replica with no images still takes part in every sum (the others would wait for it) and
/// adds nothing: the other two shards normalize as the whole batch of theirs.
#[test]
fn an_empty_shard_takes_part_and_adds_nothing() {
    shards_against_the_whole_batch(&[5, 0, 3], DType::F64, Device::Cpu, 1e-12);
}

/// One value per channel on each of three replicas: too few for plain batch norm, but three in
/// all, as the whole batch [3, C, 1, 1] has.
#[test]
fn one_value_per_replica_is_enough_when_the_batch_has_more() {
    let one = step(
        &Tensor::from_vec(vec![1.0f64, 2.0], &[1, 2, 1, 1], Device::Cpu).unwrap(),
        &Tensor::from_vec(vec![1.0f64, 1.0], &[1, 2, 1, 1], Device::Cpu).unwrap(),
        (
            &Tensor::from_vec(vec![1.0f64, 1.0], &[2], Device::Cpu).unwrap(),
            &Tensor::from_vec(vec![0.0f64, 0.0], &[2], Device::Cpu).unwrap(),
        ),
        None,
    );
    let err = one.expect_err("plain batch norm refuses one value per channel");
    assert!(err.to_string().contains("more than one value"), "{err}");
    shards_against_the_whole_batch(&[1, 1, 1], DType::F64, Device::Cpu, 1e-12);
}

/// One replica in all: the counts and sums are its own, and the step is plain batch norm's bit
/// for bit (the combination's weight is 1 and its deviation 0), in f32 as training runs it.
#[test]
fn one_replica_is_plain_batch_norm_bit_for_bit() {
    let shape = [3, 4, 5, 7];
    let f32s = |v: Vec<f64>| on(&v, &shape, DType::F32, Device::Cpu);
    let (x, r) = (
        f32s(random(&shape, 5, 2.0, 3.0)),
        f32s(random(&shape, 6, 0.0, 1.0)),
    );
    let gamma = on(&random(&[4], 7, 1.0, 0.5), &[4], DType::F32, Device::Cpu);
    let beta = on(&random(&[4], 8, 0.0, 1.0), &[4], DType::F32, Device::Cpu);
    let plain = step(&x, &r, (&gamma, &beta), None).unwrap();
    let synced = step(&x, &r, (&gamma, &beta), replicas(1).pop()).unwrap();
    assert_eq!(format!("{plain:?}"), format!("{synced:?}"));
}

/// A replica alone with one value per channel is refused with an error that names the replicas.
#[test]
fn one_value_in_all_replicas_is_an_error() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0], &[1, 2, 1, 1], Device::Cpu).unwrap();
    let ones = Tensor::from_vec(vec![1.0f64, 1.0], &[2], Device::Cpu).unwrap();
    let err = step(&x, &x, (&ones, &ones), replicas(1).pop()).expect_err("one value in all");
    assert!(err.to_string().contains("across the replicas"), "{err}");
}

/// Gradients of a conv → BN → ReLU → conv → BN block with the mean loss of `x`'s batch (as a
/// data-parallel rank computes them on its shard): w1, w2, γ1, β1, γ2, β2, each as f64.
fn block_gradients(
    x: &Tensor,
    r: &Tensor,
    (w1, w2): (&Tensor, &Tensor),
    sync: Option<Arc<dyn ReplicaSum>>,
) -> Vec<Vec<f64>> {
    use kiln::core::shape::Window2d;
    let same = Window2d::square(3, 1, 1);
    let (w1, w2) = (w1.detach().with_grad(), w2.detach().with_grad());
    let norm = |channels| {
        let mut bn = BatchNorm2d::with_dtype(channels, DType::F64, Device::Cpu).unwrap();
        bn.synchronize(sync.clone());
        bn
    };
    let (mut bn1, mut bn2) = (norm(w1.shape()[0]), norm(w2.shape()[0]));
    let h = ops::conv2d(x, &w1, None, same).unwrap();
    let h = ops::relu(&bn1.forward(&h, true).unwrap()).unwrap();
    let y = bn2
        .forward(&ops::conv2d(&h, &w2, None, same).unwrap(), true)
        .unwrap();
    let grads = ops::mean(&ops::mul(&y, r).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    [&w1, &w2, &bn1.gamma, &bn1.beta, &bn2.gamma, &bn2.beta]
        .into_iter()
        .map(|t| host(grads.get(t).expect("a gradient")))
        .collect()
}

/// Data parallelism's step (PyTorch DDP with SyncBatchNorm): each replica's mean loss over its
/// shard, its gradients averaged over the replicas, equal the whole batch's gradients, for the
/// weights before the batch norms too (their gradients pass through dx and its summed terms).
/// Without synchronization the average is not the whole batch's gradient (checked too).
#[test]
fn averaged_gradients_of_a_synchronized_block_are_the_whole_batchs() {
    let (n, c, k, side) = (6, 3, 4, 5);
    let shape = [n, c, side, side];
    let (x, r) = (
        random(&shape, 11, 1.0, 2.0),
        random(&[n, k, side, side], 12, 0.0, 1.0),
    );
    let w1 = on(
        &random(&[k, c, 3, 3], 13, 0.0, 0.5),
        &[k, c, 3, 3],
        DType::F64,
        Device::Cpu,
    );
    let w2 = on(
        &random(&[k, k, 3, 3], 14, 0.0, 0.5),
        &[k, k, 3, 3],
        DType::F64,
        Device::Cpu,
    );
    let whole = block_gradients(
        &on(&x, &shape, DType::F64, Device::Cpu),
        &on(&r, &[n, k, side, side], DType::F64, Device::Cpu),
        (&w1, &w2),
        None,
    );
    let averaged = |sync: bool| -> Vec<Vec<f64>> {
        let halves = [n / 2, n / 2];
        let per_replica: Vec<Vec<Vec<f64>>> = std::thread::scope(|scope| {
            let running: Vec<_> = split(&x, c * side * side, &halves)
                .into_iter()
                .zip(split(&r, k * side * side, &halves))
                .zip(replicas(2))
                .map(|((x, r), sum)| {
                    let (w1, w2) = (&w1, &w2);
                    scope.spawn(move || {
                        let x = on(&x, &[n / 2, c, side, side], DType::F64, Device::Cpu);
                        let r = on(&r, &[n / 2, k, side, side], DType::F64, Device::Cpu);
                        block_gradients(&x, &r, (w1, w2), sync.then_some(sum))
                    })
                })
                .collect();
            running.into_iter().map(|t| t.join().unwrap()).collect()
        });
        (0..whole.len())
            .map(|i| {
                let (a, b) = (&per_replica[0][i], &per_replica[1][i]);
                a.iter().zip(b).map(|(a, b)| (a + b) / 2.0).collect()
            })
            .collect()
    };
    let names = ["w1", "w2", "γ1", "β1", "γ2", "β2"];
    for (name, (mean, whole)) in names.iter().zip(averaged(true).iter().zip(&whole)) {
        assert_near(name, mean, whole, 1e-12);
    }
    let per_rank = averaged(false);
    let worst = per_rank[0]
        .iter()
        .zip(&whole[0])
        .map(|(a, b)| (a - b).abs() / (1e-12 + b.abs()))
        .fold(0.0, f64::max);
    assert!(
        worst > 1e-3,
        "per-replica statistics change w1's gradient: {worst}"
    );
}
