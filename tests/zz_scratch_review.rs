use kiln::backend;
use kiln::nn::{Module, ResidualBlock, Mode};
use kiln::{autocast, autocast_activations, ops, DType, Device, Tensor, Window2d};

fn r(shape: &[usize], seed: u64, dt: DType, dev: Device) -> Tensor {
    Tensor::randn(shape, 1.0, seed, Device::Cpu).unwrap().to_dtype(dt).unwrap().to_device(dev).unwrap()
}

#[test]
fn scratch() {
    for dev in [Device::Cpu, Device::CudaEmulated] {
        let f = DType::BF16;
        eprintln!("==== {dev}");
        // 1. concat / narrow of bf16
        let a = r(&[2, 3], 1, f, dev).with_grad();
        let b = r(&[2, 3], 2, f, dev);
        eprintln!("concat bf16: {:?}", ops::concat(&[&a, &b], 1).map(|t| t.dtype()));
        eprintln!("narrow bf16: {:?}", ops::narrow(&a, 1, 0, 2).map(|t| t.dtype()));
        // 2. add bf16 + f32, mul
        let c = r(&[2, 3], 3, DType::F32, dev).with_grad();
        eprintln!("add bf16+f32: {:?}", ops::add(&a, &c).map(|t| t.dtype()));
        eprintln!("mul f32*bf16: {:?}", ops::mul(&c, &a).map(|t| t.dtype()));
        // 3. sum/mean of bf16 -> dtype; combining with f32 loss
        let m = ops::mean(&a).unwrap();
        eprintln!("mean bf16 dtype: {:?}", m.dtype());
        let g = m.backward().unwrap();
        eprintln!("mean bwd grad dtype {:?}", g.get(&a).unwrap().dtype());
        let m = ops::mean(&a).unwrap();
        let l32 = ops::mean(&c).unwrap();
        eprintln!("sum_losses(f32,bf16): {:?}", ops::sum_losses(&[&l32, &m]).map(|t| t.dtype()));
        // 4. residual identity shortcut with f32 input under activations
        let mut blk = ResidualBlock::new(4, 4, 1, 1, dev).unwrap();
        let x = r(&[2, 4, 6, 6], 4, DType::F32, dev);
        let y = autocast_activations(f, || blk.forward(&x, Mode::Train)).unwrap();
        eprintln!("residual identity f32 input: {:?}", y.map(|t| t.dtype()));
        // 5. linear on bf16 input under autocast(f16)
        let xb = r(&[3, 5], 5, f, dev).with_grad();
        let w = r(&[4, 5], 6, DType::F32, dev).with_grad();
        let y = autocast(DType::F16, || ops::linear(&xb, &w, None)).unwrap();
        eprintln!("linear bf16 x under f16 products: {:?}", y.as_ref().map(|t| t.dtype()));
        let y = autocast_activations(DType::F16, || ops::linear(&xb, &w, None)).unwrap();
        eprintln!("linear bf16 x under f16 activations: {:?}", y.as_ref().map(|t| t.dtype()));
        let xc = r(&[2, 3, 6, 6], 7, f, dev).with_grad();
        let wc = r(&[4, 3, 3, 3], 8, DType::F32, dev).with_grad();
        let y = autocast(DType::F16, || ops::conv2d(&xc, &wc, None, Window2d::square(3, 1, 1))).unwrap();
        eprintln!("conv bf16 x under f16 products: {:?}", y.as_ref().map(|t| t.dtype()));
        if let Ok(y) = y {
            let l = ops::mean(&ops::cast(&y, DType::F32).unwrap()).unwrap();
            let g = l.backward();
            eprintln!("  conv bwd: {:?}", g.map(|g| (g.get(&xc).map(|t| t.dtype()), g.get(&wc).map(|t| t.dtype()))));
        }
        // 6. 16-bit with mixed=None: linear & conv forward/backward
        let y = ops::linear(&xb, &w, None).unwrap();
        eprintln!("linear bf16 x, no autocast: {:?}", y.dtype());
        let l = ops::mean(&y).unwrap();
        let g = l.backward().unwrap();
        eprintln!("  grads x {:?} w {:?}", g.get(&xb).unwrap().dtype(), g.get(&w).unwrap().dtype());
        let y = ops::conv2d(&xc, &wc, None, Window2d::square(3, 1, 1)).unwrap();
        eprintln!("conv bf16 x, no autocast: {:?}", y.dtype());
        let g = ops::mean(&y).unwrap().backward().unwrap();
        eprintln!("  grads x {:?} w {:?}", g.get(&xc).unwrap().dtype(), g.get(&wc).unwrap().dtype());
        // 7. conv_transpose under activations with bf16 input
        let wt = r(&[3, 4, 3, 3], 9, DType::F32, dev).with_grad();
        let bt = r(&[4], 10, DType::F32, dev).with_grad();
        let y = autocast_activations(f, || ops::conv_transpose2d(&xc, &wt, Some(&bt), Window2d::square(3, 1, 1), (0, 0), 1)).unwrap();
        match y {
            Ok(y) => {
                eprintln!("conv_transpose bf16: {:?}", y.dtype());
                let l = ops::softmax_cross_entropy(&ops::flatten(&y).unwrap(), &Tensor::from_vec(vec![0i32, 1], &[2], Device::Cpu).unwrap().to_device(dev).unwrap()).unwrap();
                let g = l.backward();
                eprintln!("  bwd: {:?}", g.map(|g| (g.get(&xc).map(|t| t.dtype()), g.get(&wt).map(|t| t.dtype()), g.get(&bt).map(|t| t.dtype()))));
            }
            Err(e) => eprintln!("conv_transpose err {e}"),
        }
        // 8. softmax / log_softmax / maxout backward
        let s = ops::log_softmax(&a, 1).unwrap();
        let g = ops::mean(&s).unwrap().backward();
        eprintln!("log_softmax bwd: {:?}", g.map(|g| g.get(&a).map(|t| t.dtype())));
        let xm = r(&[2, 4, 3, 3], 11, f, dev).with_grad();
        let g = ops::mean(&ops::maxout(&xm, 2).unwrap()).unwrap().backward();
        eprintln!("maxout bwd: {:?}", g.map(|g| g.get(&xm).map(|t| t.dtype())));
        let g = ops::mean(&ops::l2_pool2d(&xm, Window2d::square(2, 2, 0)).unwrap()).unwrap().backward();
        eprintln!("l2pool bwd: {:?}", g.map(|g| g.get(&xm).map(|t| t.dtype())));
        let g = ops::mean(&ops::scale(&ops::elu(&xm, 1.0).unwrap(), 2.0).unwrap()).unwrap().backward();
        eprintln!("elu/scale bwd: {:?}", g.map(|g| g.get(&xm).map(|t| t.dtype())));
        // 9. l2 penalty on bf16
        eprintln!("l2_penalty bf16: {:?}", ops::l2_penalty(&[&a], 0.1).map(|t| t.dtype()));
        // 10. f64 on CPU under activations
        if dev == Device::Cpu {
            let x64 = r(&[2, 3, 6, 6], 12, DType::F64, dev).with_grad();
            let w64 = r(&[4, 3, 3, 3], 13, DType::F64, dev).with_grad();
            let y = autocast_activations(f, || ops::conv2d(&x64, &w64, None, Window2d::square(3, 1, 1))).unwrap();
            eprintln!("f64 conv under activations: {:?}", y.map(|t| t.dtype()));
            let y = ops::conv2d(&x64, &w64, None, Window2d::square(3, 1, 1));
            eprintln!("f64 conv plain: {:?}", y.map(|t| t.dtype()));
        }
        // 11. bias_grad with bf16 + linear bias on device products-only
        let bl = r(&[4], 14, DType::F32, dev).with_grad();
        let y = autocast_activations(f, || ops::linear(&xb, &w, Some(&bl))).unwrap().unwrap();
        let g = ops::mean(&y).unwrap().backward().unwrap();
        eprintln!("linear bias grad {:?}, x {:?}", g.get(&bl).unwrap().dtype(), g.get(&xb).unwrap().dtype());
        // 12. dropout nn & batch norm eval with bf16
        let mut bn = ops::BatchNorm2d::new(4, dev).unwrap();
        let ybn = bn.forward(&xm, false);
        eprintln!("bn eval bf16: {:?}", ybn.map(|t| t.dtype()));
        // 13. scalar of bf16
        eprintln!("scalar: {:?}", ops::mean(&a).unwrap().scalar());
    }
}
