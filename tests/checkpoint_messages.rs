//! What a checkpoint whose tensors cannot be this model's weights is told (issue 16): a tensor of
//! an integer dtype names the tensor and both dtypes (it was reported as an unsupported cast), and
//! NaN or infinite weights name the tensor and say the run diverged (they were reported as
//! "training diverged, try a lower learning rate" after a wasted step).

use kiln::nn::{Init, Linear};
use kiln::train::state::{model_tensors, restore_model};
use kiln::{Device, Tensor};

fn layer() -> Linear {
    Linear::new(3, 2, Init::KaimingNormal, 1, Device::Cpu).unwrap()
}

/// Another draw of the layer's tensors (so a restore would change the weights), with `name`
/// replaced by `t`.
fn with(name: &str, t: Tensor) -> Vec<(String, Tensor)> {
    let other = Linear::new(3, 2, Init::KaimingNormal, 7, Device::Cpu).unwrap();
    let mut tensors = model_tensors(&other);
    let slot = tensors.iter_mut().find(|(n, _)| n == name).unwrap();
    slot.1 = t;
    tensors
}

#[test]
fn an_integer_tensor_names_itself_and_both_dtypes() {
    let bad = Tensor::from_vec(vec![1i32; 6], &[2, 3], Device::Cpu).unwrap();
    let err = restore_model(&mut layer(), &with("model.weight", bad))
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.weight"), "{err}");
    assert!(err.contains("I32") && err.contains("F32"), "{err}");
    assert!(!err.contains("cast"), "{err}");
}

#[test]
fn non_finite_weights_name_the_tensor_and_the_divergence() {
    for bad_value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let bad = Tensor::from_vec(vec![0.5, 0.25, bad_value], &[2], Device::Cpu);
        assert!(bad.is_err(), "3 values do not fill [2]");
        let bad = Tensor::from_vec(vec![0.5, bad_value], &[2], Device::Cpu).unwrap();
        let mut model = layer();
        let before: Vec<Vec<f32>> = model_tensors(&model)
            .iter()
            .map(|(_, t)| t.to_vec::<f32>().unwrap())
            .collect();
        let err = restore_model(&mut model, &with("model.bias", bad))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.bias") && err.contains("element 1"),
            "{err}"
        );
        assert!(
            err.contains("diverged") && err.contains("best.safetensors"),
            "{err}"
        );
        assert!(!err.contains("learning rate"), "{err}");
        // Refused as a whole: the weight checked before the bias was not written either.
        let after: Vec<Vec<f32>> = model_tensors(&model)
            .iter()
            .map(|(_, t)| t.to_vec::<f32>().unwrap())
            .collect();
        assert_eq!(after, before);
    }
}

#[test]
fn finite_weights_of_any_float_dtype_restore() {
    let model = layer();
    let saved: Vec<(String, Tensor)> = model_tensors(&model)
        .into_iter()
        .map(|(n, t)| (n, t.to_dtype(kiln::DType::F64).unwrap()))
        .collect();
    let mut other = Linear::new(3, 2, Init::KaimingNormal, 2, Device::Cpu).unwrap();
    restore_model(&mut other, &saved).unwrap();
    for ((_, a), (_, b)) in model_tensors(&model).iter().zip(model_tensors(&other)) {
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    }
}
