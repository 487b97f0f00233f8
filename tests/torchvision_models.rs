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
