//! What a checkpoint says about its run, as one typed struct: stored as one JSON string under the
//! `kiln` key of the safetensors metadata (a string-to-string map). Version 3 adds the run's
//! settings (`settings`); version 2 checkpoints (without them) and version 1 checkpoints (one
//! string key per entry, Fashion-MNIST only) are still read. The dataset description may carry
//! `origin` (the data's kind, path and options, [`DataSpec`](crate::data::DataSpec)): an
//! optional field within version 3, absent in checkpoints written before it and ignored by a
//! kiln that predates it, so the version stays 3. So is `world_size` (the ranks of a distributed
//! run; absent for one process).

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::checkpoint::{checkpoint_from_bytes, load_checkpoint, Checkpoint};
use super::error::TrainError;
use super::precision::{Precision, ScalerState};
use crate::data::{DatasetInfo, Normalization, Sources};
use crate::nn::Architecture;

/// The metadata key holding the JSON of a [`CheckpointMeta`].
pub const META_KEY: &str = "kiln";

/// Whether a safetensors file's metadata is a kiln checkpoint's: version 2's [`META_KEY`] JSON
/// entry, or version 1's string entries (which always hold `architecture`); a plain `state_dict`
/// (as `safetensors.torch.save_file` writes) has neither.
pub fn is_checkpoint_metadata<S: std::hash::BuildHasher>(
    meta: &std::collections::HashMap<String, String, S>,
) -> bool {
    meta.contains_key(META_KEY) || meta.contains_key(V1_ARCHITECTURE_KEY)
}

/// The entry every version 1 checkpoint's metadata has.
const V1_ARCHITECTURE_KEY: &str = "architecture";
/// The version this kiln writes; it reads this one, 2 and 1.
pub const META_VERSION: u32 = 3;

/// Everything a checkpoint records besides its tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub version: u32,
    pub model: Architecture,
    /// The data the model was trained on: its input shape, classes and normalization.
    pub dataset: DatasetInfo,
    /// The restart and epoch (0-based) the weights are from.
    pub restart: usize,
    pub epoch: usize,
    /// The seed of that restart.
    pub seed: u64,
    /// `None` in version 1 checkpoints.
    pub batch_size: Option<usize>,
    /// The best validation accuracy so far; `None` when the run has no validation set (then
    /// every epoch counts as the best).
    pub best_val_accuracy: Option<f64>,
    /// `None` in version 1 checkpoints saved without the optimizer state.
    pub precision: Option<Precision>,
    /// What resuming needs (in `last.safetensors`, not in `best.safetensors`).
    pub training: Option<TrainingState>,
    /// The run's settings by flag, as [`TrainConfig::resume_flags`](super::TrainConfig::resume_flags)
    /// spells them (`"--lr"` → `"0.01"`); `None` before version 3.
    pub settings: Option<BTreeMap<String, String>>,
    /// The number of ranks that trained it (`mpirun -np N`); `None` for one process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world_size: Option<usize>,
}

/// The optimizer's scalars and the loss scaler's state (the optimizer's tensors are saved beside).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    /// The optimizer's own name for itself (`OptimizerState::optimizer`).
    pub optimizer: String,
    pub step: u64,
    pub lr: f64,
    pub loss_scaler: Option<ScalerState>,
}

impl CheckpointMeta {
    /// The safetensors metadata map: `format: pt` (what PyTorch's loader expects) and the JSON.
    pub fn to_metadata(&self) -> Result<BTreeMap<String, String>, TrainError> {
        let json = serde_json::to_string(self).map_err(|e| {
            TrainError::invalid("checkpoint metadata", format!("cannot encode it: {e}"))
        })?;
        Ok(BTreeMap::from([
            ("format".to_string(), "pt".to_string()),
            (META_KEY.to_string(), json),
        ]))
    }

    /// Reads the metadata of the checkpoint at `path` (named in every error): version 2 JSON, or
    /// the version 1 string entries.
    pub fn from_metadata(
        meta: &BTreeMap<String, String>,
        path: &Path,
    ) -> Result<CheckpointMeta, TrainError> {
        match meta.get(META_KEY) {
            Some(json) => from_json(json, path),
            None if meta.contains_key(V1_ARCHITECTURE_KEY) => from_v1(meta, path),
            None => Err(TrainError::format(
                path,
                format!("no {META_KEY:?} metadata entry: not a checkpoint written by kiln train"),
            )),
        }
    }

    /// The flags the run was trained with, by flag: [`CheckpointMeta::settings`], or for an older
    /// checkpoint those its other fields record (model, batch size, seed, precision). A run with
    /// `--freeze` recorded before `--frozen-bn` existed trained its frozen batch norms on batch
    /// statistics: it reads as `--frozen-bn train`.
    pub fn saved_flags(&self) -> BTreeMap<String, String> {
        if let Some(settings) = &self.settings {
            let mut settings = settings.clone();
            let froze = settings.get("--freeze").is_some_and(|f| !f.is_empty());
            if froze && !settings.contains_key("--frozen-bn") {
                settings.insert("--frozen-bn".into(), "train".into());
            }
            return settings;
        }
        let base_seed = self.seed.wrapping_sub(1000 * self.restart as u64);
        let mut flags = BTreeMap::from([
            ("--model".to_string(), self.model.name().to_string()),
            ("--seed".to_string(), base_seed.to_string()),
        ]);
        if let Some(batch) = self.batch_size {
            flags.insert("--batch-size".into(), batch.to_string());
        }
        if let Some(precision) = self.precision {
            flags.insert("--precision".into(), precision.name().to_string());
        }
        flags
    }

    /// The best validation accuracy as the trainer compares it (`+inf` without a validation set).
    pub fn best_val_score(&self) -> f64 {
        self.best_val_accuracy.unwrap_or(f64::INFINITY)
    }
}

/// Loads a checkpoint written by `kiln train` with its metadata.
pub fn load_run_checkpoint(
    path: impl AsRef<Path>,
) -> Result<(Checkpoint, CheckpointMeta), TrainError> {
    let path = path.as_ref();
    let checkpoint = load_checkpoint(path)?;
    let meta = CheckpointMeta::from_metadata(&checkpoint.metadata, path)?;
    Ok((checkpoint, meta))
}

/// [`load_run_checkpoint`] of a file already read: `bytes` are its contents, `path` names it.
pub(crate) fn run_checkpoint_from_bytes(
    bytes: &[u8],
    path: &Path,
) -> Result<(Checkpoint, CheckpointMeta), TrainError> {
    let checkpoint = checkpoint_from_bytes(bytes, path)?;
    let meta = CheckpointMeta::from_metadata(&checkpoint.metadata, path)?;
    Ok((checkpoint, meta))
}

fn field_error(path: &Path, field: &str, why: impl std::fmt::Display) -> TrainError {
    TrainError::format(path, format!("checkpoint metadata field {field:?}: {why}"))
}

fn from_json(json: &str, path: &Path) -> Result<CheckpointMeta, TrainError> {
    let value: Value = serde_json::from_str(json).map_err(|e| field_error(path, META_KEY, e))?;
    let Value::Object(obj) = value else {
        return Err(field_error(path, META_KEY, "is not a JSON object"));
    };
    let version: u32 = field(&obj, "version", path)?;
    if version > META_VERSION {
        return Err(field_error(
            path,
            "version",
            format!("{version} is newer than this kiln reads (up to {META_VERSION}): upgrade kiln"),
        ));
    }
    if version < 2 {
        return Err(field_error(
            path,
            "version",
            format!("{version} is not a version stored as JSON (2 and later)"),
        ));
    }
    Ok(CheckpointMeta {
        version,
        model: field(&obj, "model", path)?,
        dataset: field(&obj, "dataset", path)?,
        restart: field(&obj, "restart", path)?,
        epoch: field(&obj, "epoch", path)?,
        seed: field(&obj, "seed", path)?,
        batch_size: field(&obj, "batch_size", path)?,
        best_val_accuracy: field(&obj, "best_val_accuracy", path)?,
        precision: field(&obj, "precision", path)?,
        training: field(&obj, "training", path)?,
        settings: field(&obj, "settings", path)?,
        world_size: field(&obj, "world_size", path)?,
    })
}

/// One field of the JSON object, so that an error names it (an absent `Option` field is `None`).
fn field<T: DeserializeOwned>(
    obj: &Map<String, Value>,
    name: &str,
    path: &Path,
) -> Result<T, TrainError> {
    match obj.get(name) {
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| field_error(path, name, e)),
        None => serde_json::from_value(Value::Null).map_err(|_| field_error(path, name, "missing")),
    }
}

/// Version 1: one string entry per value, always Fashion-MNIST (1x28x28, 10 classes).
fn from_v1(meta: &BTreeMap<String, String>, path: &Path) -> Result<CheckpointMeta, TrainError> {
    let text = |key: &str| {
        meta.get(key)
            .map(String::as_str)
            .ok_or_else(|| field_error(path, key, "missing"))
    };
    fn parse<T: std::str::FromStr>(path: &Path, key: &str, v: &str) -> Result<T, TrainError>
    where
        T::Err: std::fmt::Display,
    {
        v.trim()
            .parse()
            .map_err(|e| field_error(path, key, format!("{v:?}: {e}")))
    }
    let number = |key: &str| text(key).and_then(|v| parse::<f64>(path, key, v));
    let floats = |key: &str| -> Result<Vec<f32>, TrainError> {
        text(key)?.split(',').map(|v| parse(path, key, v)).collect()
    };
    let model = Architecture::parse(text("architecture")?)
        .map_err(|e| field_error(path, "architecture", e))?;
    let precision = meta
        .get("precision")
        .map(|p| Precision::parse(p).map_err(|e| field_error(path, "precision", e)))
        .transpose()?;
    let training = match meta.get("optimizer") {
        None => None,
        Some(optimizer) => Some(TrainingState {
            optimizer: optimizer.clone(),
            step: parse(path, "optimizer_step", text("optimizer_step")?)?,
            lr: number("optimizer_lr")?,
            loss_scaler: match meta.get("loss_scale") {
                None => None,
                Some(scale) => Some(ScalerState {
                    scale: parse(path, "loss_scale", scale)?,
                    good_steps: parse(
                        path,
                        "loss_scale_good_steps",
                        text("loss_scale_good_steps")?,
                    )?,
                }),
            },
        }),
    };
    let normalization = Normalization {
        mean: floats("normalization_mean")?,
        std: floats("normalization_std")?,
    };
    let best = number("best_val_accuracy")?;
    Ok(CheckpointMeta {
        version: 1,
        model,
        // Version 1 was written only for Fashion-MNIST: the one place src/train/ names it.
        dataset: crate::data::FashionMnist::info(
            normalization,
            Sources {
                train: "not recorded (a version 1 checkpoint)".into(),
                test: "not recorded (a version 1 checkpoint)".into(),
            },
        ),
        restart: parse(path, "restart", text("restart")?)?,
        epoch: parse(path, "epoch", text("epoch")?)?,
        seed: parse(path, "seed", text("seed")?)?,
        batch_size: None,
        best_val_accuracy: best.is_finite().then_some(best),
        precision,
        training,
        settings: None,
        world_size: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_entries() -> BTreeMap<String, String> {
        [
            ("format", "pt"),
            ("architecture", "lenet5"),
            ("restart", "0"),
            ("epoch", "4"),
            ("seed", "1"),
            ("best_val_accuracy", "inf"),
            ("normalization_mean", "0.286"),
            ("normalization_std", "0.353"),
            ("optimizer", "sgd"),
            ("optimizer_step", "4220"),
            ("optimizer_lr", "1e-2"),
            ("precision", "f16"),
            ("loss_scale", "3.2768e4"),
            ("loss_scale_good_steps", "7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn version_1_entries_read_as_fashion_mnist_with_their_training_state() {
        let meta = CheckpointMeta::from_metadata(&v1_entries(), Path::new("old.st")).unwrap();
        assert_eq!(meta.version, 1);
        assert_eq!(meta.model, Architecture::LeNet5);
        assert_eq!((meta.restart, meta.epoch, meta.seed), (0, 4, 1));
        assert_eq!(meta.best_val_accuracy, None, "inf: no validation set");
        assert_eq!(meta.dataset.sample_shape, [1, 28, 28]);
        assert_eq!(meta.dataset.num_classes(), 10);
        assert_eq!(meta.dataset.normalization.mean, vec![0.286]);
        assert_eq!(meta.precision, Some(Precision::F16));
        let training = meta.training.unwrap();
        assert_eq!((training.optimizer.as_str(), training.step), ("sgd", 4220));
        assert_eq!(
            training.loss_scaler,
            Some(ScalerState {
                scale: 32768.0,
                good_steps: 7
            })
        );
    }

    #[test]
    fn a_bad_version_1_entry_names_the_file_and_the_entry() {
        let mut entries = v1_entries();
        entries.insert("epoch".into(), "four".into());
        let err = CheckpointMeta::from_metadata(&entries, Path::new("old.st")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("old.st") && msg.contains("\"epoch\""), "{msg}");
        entries.remove("normalization_std");
        let msg = CheckpointMeta::from_metadata(&entries, Path::new("old.st"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("normalization_std") || msg.contains("epoch"),
            "{msg}"
        );
    }

    fn v2() -> CheckpointMeta {
        let mut meta = CheckpointMeta::from_metadata(&v1_entries(), Path::new("x")).unwrap();
        meta.version = META_VERSION;
        meta.batch_size = Some(64);
        meta.best_val_accuracy = Some(0.9);
        meta.settings = Some(BTreeMap::from([("--lr".into(), "0.01".into())]));
        meta
    }

    #[test]
    fn older_checkpoints_give_the_flags_their_fields_record() {
        let mut meta = v2();
        meta.settings = None;
        meta.restart = 2;
        meta.seed = 2005;
        let flags = meta.saved_flags();
        assert_eq!(
            flags["--seed"], "5",
            "the base seed, before the restart's offset"
        );
        assert_eq!(flags["--model"], "lenet5");
        assert_eq!(flags["--batch-size"], "64");
        assert_eq!(flags["--precision"], "f16");
        assert!(!flags.contains_key("--lr"));
        let v2_entries = edited(|o| {
            o.insert("version".into(), Value::from(2));
            o.remove("settings");
        });
        let back = CheckpointMeta::from_metadata(&v2_entries, Path::new("x")).unwrap();
        assert_eq!(back.settings, None);
    }

    #[test]
    fn a_frozen_run_recorded_before_frozen_bn_resumes_with_batch_statistics() {
        let mut meta = v2();
        let settings = meta.settings.as_mut().unwrap();
        settings.insert("--freeze".into(), r#"["layer1.*"]"#.into());
        assert_eq!(meta.saved_flags()["--frozen-bn"], "train");
        let settings = meta.settings.as_mut().unwrap();
        settings.insert("--frozen-bn".into(), "eval".into());
        assert_eq!(meta.saved_flags()["--frozen-bn"], "eval", "recorded: kept");
        let settings = meta.settings.as_mut().unwrap();
        settings.insert("--freeze".into(), String::new());
        settings.remove("--frozen-bn");
        assert!(
            !meta.saved_flags().contains_key("--frozen-bn"),
            "nothing frozen"
        );
    }

    #[test]
    fn the_json_round_trips_under_one_key() {
        let meta = v2();
        let entries = meta.to_metadata().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries["format"], "pt");
        let back = CheckpointMeta::from_metadata(&entries, Path::new("x")).unwrap();
        assert_eq!(back, meta);
    }

    #[test]
    fn the_data_origin_round_trips_and_is_absent_from_older_checkpoints() {
        let meta = v2();
        let json = &meta.to_metadata().unwrap()[META_KEY];
        assert!(!json.contains("origin"), "no origin: no key");
        assert_eq!(meta.dataset.origin, None);
        let mut with = meta.clone();
        let mut spec = crate::data::DataSpec::new(
            crate::data::DatasetKind::Cifar100,
            Some(Path::new("/data/cifar")),
        );
        spec.labels = crate::data::CifarLabels::Coarse;
        with.dataset.origin = Some(spec);
        let back =
            CheckpointMeta::from_metadata(&with.to_metadata().unwrap(), Path::new("x")).unwrap();
        assert_eq!(back, with);
    }

    /// The JSON of `v2()` with `edit` applied, as a checkpoint's metadata.
    fn edited(edit: impl FnOnce(&mut Map<String, Value>)) -> BTreeMap<String, String> {
        let mut value = serde_json::to_value(v2()).unwrap();
        edit(value.as_object_mut().unwrap());
        BTreeMap::from([(META_KEY.to_string(), value.to_string())])
    }

    #[test]
    fn future_versions_and_malformed_fields_are_errors_naming_file_and_field() {
        let path = Path::new("runs/x/last.safetensors");
        let read = |m: &BTreeMap<String, String>| {
            CheckpointMeta::from_metadata(m, path)
                .unwrap_err()
                .to_string()
        };
        let future = read(&edited(|o| {
            o.insert("version".into(), Value::from(META_VERSION + 1));
        }));
        assert!(
            future.contains("runs/x/last.safetensors")
                && future.contains("\"version\"")
                && future.contains("newer"),
            "{future}"
        );
        let bad = read(&edited(|o| {
            o.insert("epoch".into(), Value::from("four"));
        }));
        assert!(
            bad.contains("runs/x/last.safetensors") && bad.contains("\"epoch\""),
            "{bad}"
        );
        let missing = read(&edited(|o| {
            o.remove("dataset");
        }));
        assert!(
            missing.contains("\"dataset\"") && missing.contains("missing"),
            "{missing}"
        );
        let not_json = read(&BTreeMap::from([(
            META_KEY.to_string(),
            "{oops".to_string(),
        )]));
        assert!(not_json.contains(&format!("{META_KEY:?}")), "{not_json}");
        let none = read(&BTreeMap::new());
        assert!(
            none.contains("not a checkpoint written by kiln train"),
            "{none}"
        );
    }
}
