//! The lecture's worked examples as literal tests, on the CPU, the kernel emulation and (where one
//! is usable) a real GPU.

use kiln::{ops, Device, Tensor, Window2d};

fn vertical_edge_detector_on_6x6(device: Device) {
    // 6x6 image: left half 10, right half 0; filter rows [1, 0, -1].
    let image: Vec<f32> = (0..36)
        .map(|i| if i % 6 < 3 { 10.0 } else { 0.0 })
        .collect();
    let filter: Vec<f32> = [1.0, 0.0, -1.0].repeat(3);
    let x = Tensor::from_vec(image.clone(), &[1, 1, 6, 6], device).unwrap();
    let w = Tensor::from_vec(filter.clone(), &[1, 1, 3, 3], device).unwrap();
    let y = ops::conv2d(&x, &w, None, Window2d::square(3, 1, 0)).unwrap();
    assert_eq!(y.shape(), &[1, 1, 4, 4]);
    assert_eq!(
        y.to_vec::<f32>().unwrap(),
        [0.0, 30.0, 30.0, 0.0].repeat(4),
        "{device}"
    );
}
kiln::test_device!(vertical_edge_detector_on_6x6);

fn output_sizes_of_a_7x7_input_with_a_3x3_filter(device: Device) {
    let x = Tensor::randn(&[1, 1, 7, 7], 1.0, 1, device).unwrap();
    let w = Tensor::randn(&[1, 1, 3, 3], 1.0, 2, device).unwrap();
    let out = |s, p| ops::conv2d(&x, &w, None, Window2d::square(3, s, p));
    assert_eq!(out(1, 0).unwrap().shape(), &[1, 1, 5, 5]);
    assert_eq!(out(2, 0).unwrap().shape(), &[1, 1, 3, 3]);
    let err = out(3, 0).unwrap_err().to_string();
    assert!(err.contains("stride 3 does not fit"), "{err}");
    assert_eq!(out(1, 1).unwrap().shape(), &[1, 1, 7, 7]);
}
kiln::test_device!(output_sizes_of_a_7x7_input_with_a_3x3_filter);

fn ten_5x5_filters_on_a_32x32x3_volume(device: Device) {
    let x = Tensor::randn(&[1, 3, 32, 32], 1.0, 1, device).unwrap();
    let w = Tensor::randn(&[10, 3, 5, 5], 0.1, 2, device).unwrap();
    let b = Tensor::randn(&[10], 0.1, 3, device).unwrap();
    let y = ops::conv2d(&x, &w, Some(&b), Window2d::square(5, 1, 2)).unwrap();
    assert_eq!(y.shape(), &[1, 10, 32, 32]);
    // (F·F·C_in + 1)·K parameters: each filter has 5·5·3 weights and one bias.
    assert_eq!(w.numel() + b.numel(), 760);
}
kiln::test_device!(ten_5x5_filters_on_a_32x32x3_volume);

fn max_pool_4x4_and_its_gradient(device: Device) {
    let x = [
        1.0f32, 3.0, 2.0, 4.0, 2.0, 9.0, 1.0, 1.0, 1.0, 3.0, 2.0, 3.0, 5.0, 6.0, 1.0, 2.0,
    ];
    let xt = Tensor::from_slice(&x, &[1, 1, 4, 4], device)
        .unwrap()
        .with_grad();
    let y = ops::max_pool2d(&xt, Window2d::square(2, 2, 0)).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), [9.0, 4.0, 6.0, 3.0], "{device}");
    let dy = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[1, 1, 2, 2], device).unwrap();
    // Weighting the outputs by 1, 2, 3, 4 makes the upstream gradient [[1, 2], [3, 4]].
    let grads = ops::sum(&ops::mul(&y, &dy).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    let dx = grads.get(&xt).unwrap().to_vec::<f32>().unwrap();
    // Only the maxima (9 at (1,1), 4 at (0,3), 6 at (3,1), 3 at (2,3)) receive gradient.
    #[rustfmt::skip]
    let expected = [
        0.0, 0.0, 0.0, 2.0,
        0.0, 1.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 4.0,
        0.0, 3.0, 0.0, 0.0,
    ];
    assert_eq!(dx, expected, "{device}");
}
kiln::test_device!(max_pool_4x4_and_its_gradient);

fn softmax_of_9_5_0(device: Device) {
    let logits = Tensor::from_slice(&[9.0f32, 5.0, 0.0], &[1, 3], device).unwrap();
    let label = Tensor::from_slice(&[0i32], &[1], device).unwrap();
    let (probs, _) = kiln::backend::softmax_xent_fwd(&logits, &label).unwrap();
    let p = probs.to_vec::<f32>().unwrap();
    // The lecture prints 0.982, 0.0179 and 0.0001 (exact: 0.98190, 0.017984, 0.00012117): each
    // agrees to within one unit of its last printed digit.
    assert!(
        (p[0] - 0.982).abs() < 5e-4 && (p[1] - 0.0179).abs() < 1e-4 && (p[2] - 0.0001).abs() < 1e-4,
        "{p:?}"
    );
    let loss = ops::softmax_cross_entropy(&logits, &label)
        .unwrap()
        .scalar()
        .unwrap();
    assert!((loss - (-(p[0] as f64).ln())).abs() < 1e-5);
}
kiln::test_device!(softmax_of_9_5_0);
