//! The model file `kiln eval` and `kiln predict` read: a kiln checkpoint, which records the model
//! and its data ([`DatasetInfo`]: sample shape, normalization, class names), or a plain
//! safetensors `state_dict` without kiln metadata, as PyTorch writes with
//! `safetensors.torch.save_file(model.state_dict(), path)`, for which flags stand in for the
//! record ([`PlainModelFlags`]): `--model`, `--image-size` (224 for torchvision's networks),
//! `--mean`/`--std` (ImageNet's) and `--classes`; the channels are the first convolution's input
//! channels in the file, the class count the head's outputs. The file is read once; the weights
//! load through [`load_state_dict_bytes`], which names every missing, unexpected or mis-shaped
//! tensor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::SafeTensors;

use super::error::TrainError;
use super::init::find_head;
use super::meta::{is_checkpoint_metadata, run_checkpoint_from_bytes, CheckpointMeta};
use super::state::restore_model;
use crate::core::device::Device;
use crate::data::{DatasetInfo, Normalization, Sources};
use crate::nn::{load_state_dict_bytes, Architecture, Module, Sequential};

/// torchvision's ImageNet normalization (`transforms.Normalize`), the default for a plain file.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// The input side torchvision's networks are trained at, the default for a plain file.
pub const TORCHVISION_IMAGE_SIZE: usize = 224;

/// `--classes`: a count, or a text file of class names, one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClassList {
    Count(usize),
    File(PathBuf),
}

impl ClassList {
    /// A number is a count; anything else names a file.
    pub fn parse(text: &str) -> ClassList {
        match text.trim().parse::<usize>() {
            Ok(n) => ClassList::Count(n),
            Err(_) => ClassList::File(PathBuf::from(text)),
        }
    }

    /// The names of `classes` classes (the head's outputs): the file's lines, or `"0".."N-1"`.
    fn names(&self, classes: usize) -> Result<Vec<String>, TrainError> {
        let names: Vec<String> = match self {
            ClassList::Count(n) => (0..*n).map(|k| k.to_string()).collect(),
            ClassList::File(path) => read_class_names(path)?,
        };
        if names.len() != classes {
            let given = match self {
                ClassList::Count(n) => format!("{n}"),
                ClassList::File(path) => format!("{} ({} names)", path.display(), names.len()),
            };
            return Err(TrainError::invalid(
                "--classes",
                format!("{given}, but the model's head has {classes} outputs"),
            ));
        }
        Ok(names)
    }
}

/// The non-empty lines of a class-name file, trimmed.
fn read_class_names(path: &Path) -> Result<Vec<String>, TrainError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TrainError::io("reading the --classes file", path, e))?;
    Ok((text.lines().map(str::trim))
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// What a plain `state_dict` needs besides its tensors; each flag is refused for a kiln
/// checkpoint, which records it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlainModelFlags {
    pub model: Option<Architecture>,
    pub image_size: Option<usize>,
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
    pub classes: Option<ClassList>,
}

impl PlainModelFlags {
    /// The error for a kiln checkpoint given one of the flags, naming the first and what the
    /// checkpoint records instead.
    fn refuse_for(&self, path: &Path, meta: &CheckpointMeta) -> Result<(), TrainError> {
        let info = &meta.dataset;
        let [c, h, w] = info.sample_shape;
        let recorded = [
            (
                self.model.is_some(),
                "--model",
                format!("its model ({})", meta.model.name()),
            ),
            (
                self.image_size.is_some(),
                "--image-size",
                format!("its {c}x{h}x{w} input"),
            ),
            (
                self.mean.is_some(),
                "--mean",
                "its normalization".to_string(),
            ),
            (self.std.is_some(), "--std", "its normalization".to_string()),
            (
                self.classes.is_some(),
                "--classes",
                format!("its {} classes", info.num_classes()),
            ),
        ];
        match recorded.into_iter().find(|(given, _, _)| *given) {
            None => Ok(()),
            Some((_, flag, what)) => Err(TrainError::format(
                path,
                format!(
                    "{flag} is for a plain state_dict: the checkpoint already records {what}; \
                     leave out {flag}"
                ),
            )),
        }
    }
}

/// A model ready to run, the description of the inputs it reads, and the checkpoint's record
/// (`None` for a plain `state_dict`).
pub struct LoadedModel {
    pub model: Sequential,
    pub info: DatasetInfo,
    pub meta: Option<CheckpointMeta>,
}

/// The model in the file at `path` on `device` (see the module docs); every error names the file
/// or the flag.
pub fn load_model_file(
    path: &Path,
    flags: &PlainModelFlags,
    device: Device,
) -> Result<LoadedModel, TrainError> {
    let bytes =
        std::fs::read(path).map_err(|e| TrainError::io("reading the model file", path, e))?;
    let header = FileHeader::read(&bytes, path)?;
    if !header.from_kiln {
        return load_plain((path, &bytes), &header, flags, device);
    }
    let (checkpoint, meta) = run_checkpoint_from_bytes(&bytes, path)?;
    flags.refuse_for(path, &meta)?;
    let info = meta.dataset.clone();
    let mut model = meta
        .model
        .build_for(info.sample_shape, info.num_classes(), 0, device)?;
    restore_model(&mut model, &checkpoint.tensors)
        .map_err(|e| TrainError::format(path, e.to_string()))?;
    Ok(LoadedModel {
        model,
        info,
        meta: Some(meta),
    })
}

/// A safetensors file's header: whether kiln wrote it, and each tensor's shape.
struct FileHeader {
    from_kiln: bool,
    shapes: BTreeMap<String, Vec<usize>>,
}

impl FileHeader {
    fn read(bytes: &[u8], path: &Path) -> Result<FileHeader, TrainError> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| {
            TrainError::format(
                path,
                format!(
                    "not a safetensors file (a kiln checkpoint or a state_dict saved with \
                     safetensors.torch.save_file): {e}"
                ),
            )
        })?;
        let from_kiln = header
            .metadata()
            .as_ref()
            .is_some_and(is_checkpoint_metadata);
        let shapes = (header.tensors().into_iter())
            .map(|(name, info)| (name, info.shape.clone()))
            .collect();
        Ok(FileHeader { from_kiln, shapes })
    }

    /// The shape of the file's tensor `name`, which the network `arch` has (`what` it is).
    fn shape(
        &self,
        path: &Path,
        name: &str,
        arch: Architecture,
        what: &str,
    ) -> Result<&[usize], TrainError> {
        self.shapes.get(name).map(Vec::as_slice).ok_or_else(|| {
            TrainError::format(
                path,
                format!(
                    "has no tensor {name} ({what} of {}): it is not a state_dict of --model {}",
                    arch.name(),
                    arch.name()
                ),
            )
        })
    }
}

fn model_names() -> String {
    let names: Vec<&str> = Architecture::ALL.iter().map(|a| a.name()).collect();
    names.join(", ")
}

/// A plain `state_dict` (the file at `path`, whose contents are `bytes`): the network `--model`
/// names, for the file's channels and classes.
fn load_plain(
    (path, bytes): (&Path, &[u8]),
    header: &FileHeader,
    flags: &PlainModelFlags,
    device: Device,
) -> Result<LoadedModel, TrainError> {
    let arch = flags.model.ok_or_else(|| {
        TrainError::format(
            path,
            format!(
                "is a plain state_dict without kiln's metadata: add --model NAME to say which \
                 network it holds ({})",
                model_names()
            ),
        )
    })?;
    let size = image_size(arch, flags.image_size)?;
    let (channels, classes) = channels_and_classes(path, header, arch, size)?;
    let normalization = normalization(flags, channels)?;
    let class_names = match &flags.classes {
        Some(list) => list.names(classes)?,
        None => ClassList::Count(classes).names(classes)?,
    };
    let mut model = arch.build_for([channels, size, size], classes, 0, device)?;
    load_state_dict_bytes(&mut model, bytes, path)?;
    let file = path.display();
    let info = DatasetInfo {
        name: format!("{} state_dict {file}", arch.name()),
        sample_shape: [channels, size, size],
        class_names,
        normalization,
        sources: Sources {
            train: format!("not recorded (a plain state_dict, {file})"),
            test: "not recorded".to_string(),
        },
        origin: None,
    };
    Ok(LoadedModel {
        model,
        info,
        meta: None,
    })
}

/// `--image-size`, or 224 for torchvision's networks; kiln's own have no standard size.
fn image_size(arch: Architecture, given: Option<usize>) -> Result<usize, TrainError> {
    let default = arch
        .variant(TORCHVISION_IMAGE_SIZE)
        .map(|_| TORCHVISION_IMAGE_SIZE);
    match given.or(default) {
        Some(0) => Err(TrainError::invalid(
            "--image-size",
            "0 is not an image side",
        )),
        Some(size) => Ok(size),
        None => Err(TrainError::invalid(
            "--image-size",
            format!(
                "{} is one of kiln's own networks, with no standard input size: give \
                 --image-size N (e.g. 28 for Fashion-MNIST's, 32 for CIFAR's)",
                arch.name()
            ),
        )),
    }
}

/// The first convolution's input channels and the head's outputs, as the file holds them: a
/// probe network (3 channels, 1000 classes) names the two tensors.
fn channels_and_classes(
    path: &Path,
    header: &FileHeader,
    arch: Architecture,
    size: usize,
) -> Result<(usize, usize), TrainError> {
    let probe = arch.build_for([3, size, size], 1000, 0, Device::Cpu)?;
    let params = probe.parameters();
    let first_conv = (params.iter())
        .find(|(_, t)| t.shape().len() == 4)
        .map(|(name, _)| name.clone());
    let channels = match first_conv {
        Some(name) => header.shape(path, &name, arch, "the first convolution's weight")?[1],
        None => 3,
    };
    let head = find_head(&probe).ok_or_else(|| {
        TrainError::invalid("--model", format!("{} has no classifier head", arch.name()))
    })?;
    let classes = header.shape(path, &head.weight, arch, "the classifier head's weight")?[0];
    Ok((channels, classes))
}

/// `--mean`/`--std` (one value per channel), or ImageNet's for 3 channels.
fn normalization(flags: &PlainModelFlags, channels: usize) -> Result<Normalization, TrainError> {
    let pick = |flag: &'static str, given: &Option<Vec<f32>>, default: [f32; 3]| {
        let values = match (given, channels) {
            (Some(v), _) => v.clone(),
            (None, 3) => default.to_vec(),
            (None, _) => {
                return Err(TrainError::invalid(
                    flag,
                    format!(
                        "the model reads {channels}-channel images and ImageNet's default is \
                         for 3: give {flag} with {channels} value(s)"
                    ),
                ))
            }
        };
        if values.len() != channels {
            return Err(TrainError::invalid(
                flag,
                format!(
                    "{values:?} has {} value(s), and the model reads {channels} channel(s)",
                    values.len()
                ),
            ));
        }
        Ok(values)
    };
    let mean = pick("--mean", &flags.mean, IMAGENET_MEAN)?;
    let std = pick("--std", &flags.std, IMAGENET_STD)?;
    if let Some(bad) = mean.iter().find(|m| !m.is_finite()) {
        return Err(TrainError::invalid(
            "--mean",
            format!("{bad} is not a finite number"),
        ));
    }
    if let Some(bad) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(TrainError::invalid(
            "--std",
            format!("{bad} is not a positive number"),
        ));
    }
    Ok(Normalization { mean, std })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_parse_as_a_count_or_a_file_and_must_match_the_head() {
        assert_eq!(ClassList::parse("10"), ClassList::Count(10));
        assert_eq!(
            ClassList::parse("names.txt"),
            ClassList::File(PathBuf::from("names.txt"))
        );
        assert_eq!(ClassList::Count(3).names(3).unwrap(), ["0", "1", "2"]);
        let err = ClassList::Count(4).names(3).unwrap_err().to_string();
        assert!(
            err.contains("--classes") && err.contains("3 outputs"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("names.txt");
        std::fs::write(&file, "cat\r\ndog\n\nbird\n").unwrap();
        let list = ClassList::File(file.clone());
        assert_eq!(list.names(3).unwrap(), ["cat", "dog", "bird"]);
        let err = list.names(1000).unwrap_err().to_string();
        assert!(
            err.contains("names.txt") && err.contains("(3 names)"),
            "{err}"
        );
        let missing = ClassList::File(dir.path().join("absent.txt"));
        assert!(missing
            .names(3)
            .unwrap_err()
            .to_string()
            .contains("absent.txt"));
    }

    #[test]
    fn normalization_defaults_to_imagenet_for_rgb_and_checks_the_values() {
        let flags = PlainModelFlags::default();
        let n = normalization(&flags, 3).unwrap();
        assert_eq!(
            (n.mean, n.std),
            (IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec())
        );
        let err = normalization(&flags, 1).unwrap_err().to_string();
        assert!(err.contains("--mean") && err.contains("1 value"), "{err}");
        let grey = PlainModelFlags {
            mean: Some(vec![0.5]),
            std: Some(vec![0.0]),
            ..flags.clone()
        };
        let err = normalization(&grey, 1).unwrap_err().to_string();
        assert!(err.contains("--std") && err.contains("positive"), "{err}");
        let short = PlainModelFlags {
            mean: Some(vec![0.5, 0.5]),
            ..flags
        };
        let err = normalization(&short, 3).unwrap_err().to_string();
        assert!(err.contains("--mean") && err.contains("2 value"), "{err}");
    }

    #[test]
    fn torchvision_networks_default_to_224_and_kiln_s_own_need_an_image_size() {
        assert_eq!(image_size(Architecture::ResNet18, None).unwrap(), 224);
        assert_eq!(image_size(Architecture::ResNet18, Some(64)).unwrap(), 64);
        let err = image_size(Architecture::LeNet5, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--image-size") && err.contains("lenet5"),
            "{err}"
        );
    }
}
