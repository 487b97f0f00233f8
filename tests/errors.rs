//! Bad input gets a clear error, never a panic.

use kiln::{ops, DType, Device, Error, Tensor, Window2d};

fn t(shape: &[usize]) -> Tensor {
    Tensor::randn(shape, 1.0, 1, Device::Cpu).unwrap()
}

#[test]
fn zero_stride_is_an_error() {
    let err = ops::conv2d(
        &t(&[1, 1, 5, 5]),
        &t(&[1, 1, 3, 3]),
        None,
        Window2d::square(3, 0, 0),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { what: "stride", .. }),
        "{err}"
    );
}

#[test]
fn kernel_larger_than_the_padded_input_is_an_error() {
    let err = ops::conv2d(
        &t(&[1, 1, 3, 3]),
        &t(&[1, 1, 7, 7]),
        None,
        Window2d::square(7, 1, 1),
    )
    .unwrap_err();
    assert!(err.to_string().contains("padded input"), "{err}");
    let err = ops::max_pool2d(&t(&[1, 1, 2, 2]), Window2d::square(3, 1, 0)).unwrap_err();
    assert!(err.to_string().contains("padded input"), "{err}");
}

#[test]
fn mismatched_shapes_are_errors() {
    let err = ops::conv2d(
        &t(&[1, 2, 5, 5]),
        &t(&[1, 3, 3, 3]),
        None,
        Window2d::square(3, 1, 0),
    )
    .unwrap_err();
    assert!(err.to_string().contains("input channels"), "{err}");
    assert!(ops::conv2d(
        &t(&[2, 5, 5]),
        &t(&[1, 1, 3, 3]),
        None,
        Window2d::square(3, 1, 0)
    )
    .is_err());
    assert!(ops::linear(&t(&[4, 5]), &t(&[3, 6]), None).is_err());
    assert!(ops::linear(&t(&[4, 5]), &t(&[3, 5]), Some(&t(&[4]))).is_err());
    assert!(t(&[2, 3]).reshape(&[7]).is_err());
    assert!(Tensor::from_vec(vec![1.0f32; 5], &[2, 3], Device::Cpu).is_err());
    let g = kiln::ConvGeometry::new([1, 1, 4, 4], Window2d::square(2, 2, 0), false).unwrap();
    let (_, argmax) = kiln::backend::maxpool_fwd(&t(&[1, 1, 4, 4]), &g).unwrap();
    assert!(kiln::backend::maxpool_bwd(&t(&[1, 1, 3, 3]), &argmax, &g).is_err());
    assert!(kiln::backend::im2col(&t(&[1, 2, 4, 4]), &g).is_err());
    let one_d = t(&[5]);
    let labels = Tensor::from_vec(vec![0i32; 5], &[5], Device::Cpu).unwrap();
    assert!(kiln::backend::softmax_xent_fwd(&one_d, &labels).is_err());
}

#[test]
fn tensors_on_different_devices_are_an_error() {
    let x = t(&[1, 1, 5, 5]);
    let w = t(&[1, 1, 3, 3]).to_device(Device::CudaEmulated).unwrap();
    let err = ops::conv2d(&x, &w, None, Window2d::square(3, 1, 0)).unwrap_err();
    assert!(matches!(err, Error::DeviceMismatch { .. }), "{err}");
}

#[test]
fn bad_labels_and_dtypes_are_errors() {
    let logits = t(&[2, 3]);
    let labels = Tensor::from_vec(vec![0i32, 3], &[2], Device::Cpu).unwrap();
    let err = ops::softmax_cross_entropy(&logits, &labels).unwrap_err();
    assert!(err.to_string().contains("outside 0..3"), "{err}");
    let float_labels = t(&[2]);
    assert!(matches!(
        ops::softmax_cross_entropy(&logits, &float_labels),
        Err(Error::DTypeMismatch { .. })
    ));
    let f64_tensor = Tensor::zeros(&[2], DType::F64, Device::Cpu).unwrap();
    assert!(f64_tensor.to_device(Device::CudaEmulated).is_err());
}

#[test]
fn unusable_devices_are_errors_not_panics() {
    assert!(Device::parse("tpu").is_err());
    assert_eq!(Device::parse("cuda:1").unwrap(), Device::Cuda(1));
    // CUDA device 99 does not exist on any machine: opening it must fail cleanly.
    let err = Tensor::zeros(&[2], DType::F32, Device::Cuda(99)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::CudaUnavailable(_) | Error::DriverTooOld { .. } | Error::NoKernels
        ),
        "{err}"
    );
    // Device::best never panics; without a usable GPU it is the CPU.
    let best = Device::best();
    if kiln::cuda::usable_gpu_count() == 0 {
        assert_eq!(best, Device::Cpu);
    }
}

/// A product with more row tiles than CUDA's grid.y allows is refused with the kernel named,
/// identically under emulation and on a GPU, instead of failing in the driver.
#[test]
fn a_launch_grid_past_cuda_limits_is_an_error() {
    let rows = 65_536 * 64 + 1; // one more 64-row tile than grid.y can hold
    let a = Tensor::from_vec(vec![0.5f32; rows], &[rows], Device::CudaEmulated).unwrap();
    let b = Tensor::from_vec(vec![2.0f32], &[1], Device::CudaEmulated).unwrap();
    let err = kiln::backend::gemm(&kiln::GemmSpec::new(rows, 1, 1), 1.0, &a, &b, vec![rows, 1])
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::InvalidArgument {
                what: "launch grid",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("gemm"), "{err}");
}

/// Conversions to and from 16-bit floats work on every device through `to_dtype`, and a filled
/// tensor keeps a 16-bit input's type there; conversions that do not exist are errors.
#[test]
fn sixteen_bit_conversions_and_fills_work_on_devices() {
    let x = Tensor::from_vec(vec![1.5f32, -2.25, 3.0], &[3], Device::CudaEmulated).unwrap();
    for dtype in [DType::BF16, DType::F16] {
        let half = x.to_dtype(dtype).unwrap();
        assert_eq!(half.dtype(), dtype);
        let back = half.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(back, vec![1.5, -2.25, 3.0]);
        let filled = kiln::backend::full_like(&half, &[2, 2], 0.75).unwrap();
        assert_eq!(filled.dtype(), dtype);
        assert_eq!(filled.device(), Device::CudaEmulated);
        let values = filled
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(values, vec![0.75; 4]);
    }
    let ints = Tensor::from_vec(vec![1i32, 2], &[2], Device::Cpu).unwrap();
    assert!(ints.to_dtype(DType::F32).is_err());
}

#[test]
fn mean_of_an_empty_tensor_is_nan() {
    // As torch.mean: 0 / 0.
    let empty = Tensor::from_vec(Vec::<f32>::new(), &[0, 3], Device::Cpu).unwrap();
    let m = ops::mean(&empty).unwrap().scalar().unwrap();
    assert!(m.is_nan(), "mean of an empty tensor is {m}, expected NaN");
    let m = ops::mean(&t(&[2, 3])).unwrap().scalar().unwrap();
    assert!(m.is_finite());
}

#[test]
fn randn_with_a_bad_standard_deviation_is_an_error() {
    for std in [f32::NAN, -1.0, f32::INFINITY, f32::NEG_INFINITY] {
        match Tensor::randn(&[2, 2], std, 1, Device::Cpu) {
            Err(err @ Error::InvalidArgument { .. }) => {
                assert!(err.to_string().contains(&std.to_string()), "{err}")
            }
            Err(e) => panic!("std {std}: expected an invalid argument, got {e}"),
            Ok(_) => panic!("std {std}: randn accepted it"),
        }
    }
    assert!(Tensor::randn(&[2, 2], 0.0, 1, Device::Cpu).is_ok());
}

/// Images too small for a network are an error naming the smallest size, never an arithmetic
/// panic (LeNet-5 on 8x8 digits underflowed its size computation).
#[test]
fn images_too_small_for_lenet5_are_an_error() {
    use kiln::nn::Architecture;
    for size in [8, 12, 15] {
        let err = Architecture::LeNet5
            .build(1, size, 10, 1, Device::Cpu)
            .err()
            .expect("too small for LeNet-5");
        assert!(err.to_string().contains("at least 16x16"), "{err}");
    }
    for size in [16, 28, 32] {
        Architecture::LeNet5Classic
            .build(3, size, 10, 1, Device::Cpu)
            .unwrap();
    }
}
