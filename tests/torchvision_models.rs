//! The networks in torchvision's layout: parameter counts at torchvision's configuration
//! (3x224x224, 1000 classes), `state_dict` names and shapes, and the small-input variants.
//!
//! Expected counts: torchvision 0.29, `sum(p.numel() for p in torchvision.models.NAME().parameters())`
//! (GoogLeNet with `aux_logits=False`), as issue 14 lists them. The name lists in
//! tests/fixtures/torchvision/state_dict/ were written by `tests/torchvision_logits.py keys`.

use std::collections::BTreeMap;
use std::path::Path;

use kiln::nn::{Architecture, Module, Sequential};
use kiln::Device;

fn torchvision_config(arch: Architecture) -> Sequential {
    arch.build_for([3, 224, 224], 1000, 0, Device::Cpu).unwrap()
}

/// Name → shape of torchvision's `state_dict` for `arch`, without `num_batches_tracked`.
fn torchvision_names(arch: Architecture) -> BTreeMap<String, Vec<usize>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torchvision/state_dict")
        .join(format!("{}.txt", arch.name()));
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(name, _)| *name != "parameters" && !name.ends_with("num_batches_tracked"))
        .map(|(name, shape)| {
            let dims = shape.split('x').filter(|d| !d.is_empty());
            (name.to_string(), dims.map(|d| d.parse().unwrap()).collect())
        })
        .collect()
}

fn kiln_names(net: &Sequential) -> BTreeMap<String, Vec<usize>> {
    (net.parameters().into_iter())
        .chain(net.buffers())
        .map(|(n, t)| (n, t.shape().to_vec()))
        .collect()
}

/// Parameter count and the full `state_dict` (names and shapes) at torchvision's configuration.
fn check(arch: Architecture, parameters: usize) {
    let net = torchvision_config(arch);
    assert_eq!(net.parameter_count(), parameters, "{}", arch.name());
    let (ours, theirs) = (kiln_names(&net), torchvision_names(arch));
    let missing: Vec<_> = theirs.keys().filter(|n| !ours.contains_key(*n)).collect();
    let extra: Vec<_> = ours.keys().filter(|n| !theirs.contains_key(*n)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{}: kiln lacks {missing:?}; torchvision lacks {extra:?}",
        arch.name()
    );
    for (name, shape) in &theirs {
        assert_eq!(&ours[name], shape, "{}: {name}", arch.name());
    }
}

#[test]
fn resnet18_is_torchvisions() {
    check(Architecture::ResNet18, 11_689_512);
}

#[test]
fn resnet34_is_torchvisions() {
    check(Architecture::ResNet34, 21_797_672);
}

#[test]
fn resnet50_is_torchvisions() {
    check(Architecture::ResNet50, 25_557_032);
}

#[test]
fn alexnet_is_torchvisions() {
    check(Architecture::AlexNet, 61_100_840);
}

#[test]
fn vgg11_is_torchvisions() {
    check(Architecture::Vgg11, 132_863_336);
}

#[test]
fn vgg16_is_torchvisions() {
    check(Architecture::Vgg16, 138_357_544);
}

#[test]
fn vgg16_bn_is_torchvisions() {
    check(Architecture::Vgg16Bn, 138_365_992);
}

#[test]
fn googlenet_is_torchvisions() {
    check(Architecture::GoogLeNet, 6_624_904);
}

#[test]
fn mobilenet_v2_is_torchvisions() {
    check(Architecture::MobileNetV2, 3_504_872);
}

const TORCHVISION: [Architecture; 9] = [
    Architecture::AlexNet,
    Architecture::Vgg11,
    Architecture::Vgg16,
    Architecture::Vgg16Bn,
    Architecture::ResNet18,
    Architecture::ResNet34,
    Architecture::ResNet50,
    Architecture::GoogLeNet,
    Architecture::MobileNetV2,
];

/// The tensors each small-input variant changes (its stem, AlexNet's and VGG's first classifier
/// layer); every other name and shape is torchvision's.
fn changed_by_small_variant(arch: Architecture, name: &str) -> bool {
    match arch {
        Architecture::AlexNet => name == "features.0.weight" || name == "classifier.1.weight",
        Architecture::Vgg11 | Architecture::Vgg16 | Architecture::Vgg16Bn => {
            name == "features.0.weight" || name == "classifier.0.weight"
        }
        Architecture::GoogLeNet => name == "conv1.conv.weight",
        Architecture::MobileNetV2 => name == "features.0.0.weight",
        _ => name == "conv1.weight",
    }
}

/// Grey 28x28 images (Fashion-MNIST) and colour 32x32 ones (CIFAR) get the small-input variant:
/// torchvision's names, the documented changes, and logits of the right shape.
#[test]
fn small_inputs_get_the_small_variant_with_torchvisions_names() {
    for arch in TORCHVISION {
        for input in [[1, 28, 28], [3, 32, 32]] {
            let mut net = arch.build_for(input, 10, 0, Device::Cpu).unwrap();
            let what = format!("{} at {input:?}", arch.name());
            let variant = arch.variant(input[1]).unwrap();
            assert!(
                variant.starts_with("small-input variant"),
                "{what}: {variant}"
            );
            let (ours, theirs) = (kiln_names(&net), torchvision_names(arch));
            assert_eq!(
                ours.keys().collect::<Vec<_>>(),
                theirs.keys().collect::<Vec<_>>(),
                "{what}"
            );
            for (name, shape) in &theirs {
                let head = name.ends_with("weight") && ours[name][0] == 10 && shape[0] == 1000;
                let bias_head = ours[name] == [10] && shape == &[1000];
                if !(head || bias_head || changed_by_small_variant(arch, name)) {
                    assert_eq!(&ours[name], shape, "{what}: {name}");
                }
            }
            let rows = kiln::nn::summarize(&mut net, input).unwrap();
            assert_eq!(rows.last().unwrap().output_shape, [10], "{what}");
            let counted: usize = rows.iter().map(|r| r.parameters).sum();
            assert_eq!(counted, net.parameter_count(), "{what}");
        }
    }
}

/// Above 32x32 the standard networks are built (AlexNet from 63x63), and they run.
#[test]
fn larger_inputs_get_the_standard_network() {
    for arch in TORCHVISION {
        let standard = arch.variant(64).unwrap();
        assert_eq!(standard, "standard torchvision network", "{}", arch.name());
    }
    assert!(Architecture::AlexNet
        .variant(62)
        .unwrap()
        .starts_with("small-input"));
    let mut net = Architecture::ResNet18
        .build_for([3, 64, 64], 7, 0, Device::Cpu)
        .unwrap();
    let rows = kiln::nn::summarize(&mut net, [3, 64, 64]).unwrap();
    let shape_of = |name: &str| {
        let row = rows.iter().find(|r| r.name == name).unwrap();
        row.output_shape.clone()
    };
    // 64 → 32 (conv1) → 16 (maxpool) → 16, 8, 4, 2 (layers) → 1.
    assert_eq!(shape_of("maxpool"), [64, 16, 16]);
    assert_eq!(shape_of("layer4.1"), [512, 2, 2]);
    assert_eq!(shape_of("fc"), [7]);
}

/// AlexNet's small variant needs three 3x3 stride-2 pools' worth of image; smaller is refused.
/// VGG's ceil_mode pools keep a 1x1 map 1x1 (PyTorch's windows may overhang the input), so it
/// takes kiln's general minimum, 8x8, and only smaller is refused.
#[test]
fn too_small_an_image_is_refused_before_any_forward() {
    let Err(err) = Architecture::AlexNet.build_for([3, 14, 14], 10, 0, Device::Cpu) else {
        panic!("AlexNet accepted 14x14 images");
    };
    assert!(err.to_string().contains("15x15"), "{err}");
    let mut net = Architecture::Vgg16
        .build_for([3, 8, 8], 10, 0, Device::Cpu)
        .unwrap();
    let x = kiln::Tensor::randn(&[1, 3, 8, 8], 1.0, 5, Device::Cpu).unwrap();
    let logits = net.forward(&x, kiln::nn::Mode::Eval).unwrap();
    assert_eq!(logits.shape(), [1, 10]);
    assert!(Architecture::Vgg16
        .build_for([3, 7, 7], 10, 0, Device::Cpu)
        .is_err());
}

/// A training step reaches every parameter of every network (no child left out of a forward),
/// and leaves batch norm's running statistics moved.
#[test]
fn every_parameter_gets_a_gradient_in_training() {
    for arch in TORCHVISION {
        let mut net = arch.build_for([3, 20, 20], 4, 0, Device::Cpu).unwrap();
        let x = kiln::Tensor::randn(&[2, 3, 20, 20], 1.0, 3, Device::Cpu).unwrap();
        let labels = kiln::Tensor::from_vec(vec![1i32, 3], &[2], Device::Cpu).unwrap();
        let logits = net.forward(&x, kiln::nn::Mode::Train).unwrap();
        let loss = kiln::ops::softmax_cross_entropy(&logits, &labels).unwrap();
        let grads = loss.backward().unwrap();
        for (name, p) in net.parameters() {
            assert!(
                grads.get(p).is_some(),
                "{}: {name} got no gradient",
                arch.name()
            );
        }
        let (name, mean) = net
            .buffers()
            .into_iter()
            .find(|(n, _)| n.ends_with("running_mean"))
            .map(|(n, t)| (n, t.to_vec::<f32>().unwrap()))
            .unwrap_or_else(|| ("none".into(), vec![1.0]));
        assert!(
            mean.iter().any(|v| *v != 0.0),
            "{}: {name} did not move",
            arch.name()
        );
    }
}
