//! The `kiln` command line: train, evaluate and inspect CNNs; show devices.

// mimalloc keeps freed blocks for reuse: the tensors of each training step are allocated and
// freed again every step, which with the system allocator costs page faults and zeroing
// (and `retain_freed_host_memory` keeps mimalloc from handing them back to the OS).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use kiln::data::{detect, parse_size, CifarLabels, DataSpec, DatasetKind};
use kiln::nn::{summarize, Architecture, Module};
use kiln::train::{self, OptimizerKind, Precision, ScheduleKind, TrainConfig};
use kiln::{cuda, selftest, Device};

/// `--device`: clap reports a bad value with the flag and kiln's list of spellings.
/// `auto` under `mpirun`/`srun` is this rank's GPU (`cuda:<local rank % GPUs>`, kiln::dist).
fn device_flag(name: &str) -> Result<Device, String> {
    if name == "auto" {
        return Ok(kiln::dist::auto_device());
    }
    Device::parse(name).map_err(|e| e.to_string())
}

/// `--input 3x32x32`.
fn shape_flag(text: &str) -> Result<[usize; 3], String> {
    let dims: Vec<usize> = text
        .split(['x', 'X'])
        .map(|d| d.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{text:?} is not CxHxW (e.g. 3x32x32)"))?;
    <[usize; 3]>::try_from(dims).map_err(|_| format!("{text:?} is not CxHxW (e.g. 3x32x32)"))
}

fn kernels_flag(list: &str) -> Result<cuda::KernelPolicy, String> {
    cuda::KernelPolicy::parse(list).map_err(|e| e.to_string())
}

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Train CNNs on NVIDIA GPUs with hand-written CUDA kernels, or on the CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `kiln train --help`'s closing lines: data-parallel training.
const DATA_PARALLEL_HELP: &str =
    "Data parallel: mpirun -np N kiln train ... (--batch-size is per rank). \
Gradients are averaged in buckets (KILN_DIST_BUCKET_MB, default 25), each all-reduced as soon as \
backward has finished it, overlapping the rest of backward, in the same order on every rank \
(KILN_DIST_LOG_OVERLAP=1 prints how many went early). Batch norm uses each rank's own batch, or \
with --sync-bn the global batch (the buckets then go at the end of backward).";

#[derive(Subcommand)]
enum Command {
    /// Train a network (on Fashion-MNIST, CIFAR-10/100, IDX files or an image folder: --dataset,
    /// --data); writes checkpoints, metrics.csv and plots to --out.
    #[command(after_help = DATA_PARALLEL_HELP)]
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint on the test set of the data it was trained on (recorded in the
    /// checkpoint, or --dataset/--data) and print the confusion matrix. A plain state_dict
    /// (safetensors.torch.save_file(model.state_dict(), FILE)) takes --model and its inputs'
    /// description (--image-size, --mean, --std, --classes).
    Eval {
        /// A checkpoint written by `kiln train` (e.g. runs/latest/best.safetensors), or a plain
        /// safetensors state_dict with --model.
        checkpoint: PathBuf,
        #[command(flatten)]
        plain: PlainFileArgs,
        /// The dataset's kind (default: the one the checkpoint records, else detected from --data).
        #[arg(long, value_enum)]
        dataset: Option<DatasetKind>,
        /// The dataset's folder (default: the one the checkpoint records; for Fashion-MNIST
        /// without one, $KILN_DATA, then /usr/share/datasets/fashion-mnist).
        #[arg(long)]
        data: Option<PathBuf>,
        /// cpu, cuda, cuda:N, emulated or auto.
        #[arg(long, default_value = "auto", value_parser = device_flag)]
        device: Device,
    },
    /// Print a model's layers, output shapes and parameter counts ((F·F·C_in + 1)·K per conv).
    Summary {
        /// lenet5, lenet5-classic, vgg, resnet20, alexnet, vgg11, vgg16, vgg16-bn, resnet18,
        /// resnet34, resnet50, googlenet or mobilenet-v2.
        #[arg(value_enum)]
        model: Architecture,
        /// The sample shape CxHxW the model is built for (default Fashion-MNIST's 1x28x28).
        #[arg(long, value_parser = shape_flag, default_value = "1x28x28")]
        input: [usize; 3],
        /// The number of classes.
        #[arg(long, default_value_t = 10)]
        classes: usize,
    },
    /// Classify images with a trained model: the top classes of each image, with their names
    /// and probabilities. Images are prepared as the checkpoint's training data was (resized and
    /// center-cropped to its input size, converted to its channels, normalized).
    Predict(PredictArgs),
    /// Devices, driver, memory, and whether the CUDA kernels were compiled into this build.
    Info,
    /// Run every kernel family once on a device and on the CPU reference (small seeded inputs of
    /// odd sizes) and print a row per family and check as it is measured, then a verdict. Exit
    /// status: 0 when every row passes, 1 when any fails, 2 when the selftest cannot run (e.g. the
    /// device cannot be opened).
    Selftest {
        /// cuda, cuda:N, emulated (the kernels run on the CPU) or auto. (A string, parsed by
        /// the selftest itself: a bad device exits with status 2 and its own message.)
        #[arg(long, default_value = "cuda")]
        device: String,
        /// Also write each row to PATH as one JSON object per line as it is measured, and last a
        /// line with the verdict.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
}

/// What a plain state_dict (no kiln metadata) needs to be run; a kiln checkpoint records it all.
#[derive(clap::Args)]
struct PlainFileArgs {
    /// The network a plain state_dict holds (torchvision's names), e.g. resnet18.
    #[arg(long, value_enum)]
    model: Option<Architecture>,
    /// A plain state_dict's input side N: images are resized (shorter side) and center-cropped
    /// to NxN (default 224 for torchvision's networks). The channels are the first conv's.
    #[arg(long, value_name = "N")]
    image_size: Option<usize>,
    /// A plain state_dict's per-channel normalization mean (default ImageNet's
    /// 0.485,0.456,0.406).
    #[arg(
        long,
        value_name = "M,M,M",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    mean: Option<Vec<f32>>,
    /// A plain state_dict's per-channel normalization standard deviation (default ImageNet's
    /// 0.229,0.224,0.225).
    #[arg(long, value_name = "S,S,S", value_delimiter = ',')]
    std: Option<Vec<f32>>,
    /// A plain state_dict's classes: a text file of class names, one per line, or a count
    /// (default: the head's output count, named 0..N-1).
    #[arg(long, value_name = "FILE|N", value_parser = classes_flag)]
    classes: Option<train::ClassList>,
}

fn classes_flag(text: &str) -> Result<train::ClassList, String> {
    Ok(train::ClassList::parse(text))
}

impl PlainFileArgs {
    fn flags(&self) -> train::PlainModelFlags {
        train::PlainModelFlags {
            model: self.model,
            image_size: self.image_size,
            mean: self.mean.clone(),
            std: self.std.clone(),
            classes: self.classes.clone(),
        }
    }
}

#[derive(clap::Args)]
struct PredictArgs {
    /// A checkpoint written by `kiln train` (e.g. runs/latest/best.safetensors), or a plain
    /// safetensors state_dict with --model.
    checkpoint: PathBuf,
    #[command(flatten)]
    plain: PlainFileArgs,
    /// PNG or JPEG images, or folders of them (searched recursively).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// How many classes to show per image (at most the number of classes).
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Print one JSON object per image ({"path", "top": [{"class", "name", "probability"}]})
    /// instead of the table.
    #[arg(long)]
    json: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// cpu, cuda, cuda:N, emulated or auto (the best device).
    #[arg(long, default_value = "auto", value_parser = device_flag)]
    device: Device,
}

/// A flag given twice takes its last value (scripts append overrides to a preset command line).
#[derive(clap::Args)]
#[command(args_override_self = true)]
struct TrainArgs {
    /// Network: lenet5 (ReLU + max pool), lenet5-classic (tanh + average pool), vgg, resnet20,
    /// or torchvision's alexnet, vgg11, vgg16, vgg16-bn, resnet18, resnet34, resnet50, googlenet,
    /// mobilenet-v2 (torchvision's state_dict names). Images of 32x32 or less (AlexNet: below
    /// 63x63) get the small-input variant: a 3x3 stride-1 stem without its max pools (ResNet,
    /// GoogLeNet, AlexNet), stride 1 in features.0 and features.2 (MobileNetV2), max pools that
    /// round up and a 1x1 average pool (VGG, AlexNet); `kiln summary` shows which.
    #[arg(long, value_enum, default_value = "lenet5")]
    model: Architecture,
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    epochs: usize,
    #[arg(long, default_value_t = 64, allow_negative_numbers = true)]
    batch_size: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.01, allow_negative_numbers = true)]
    lr: f64,
    /// sgd, momentum, nesterov, rmsprop, adam or adamw.
    #[arg(long, value_enum, default_value = "momentum")]
    optimizer: OptimizerKind,
    /// Momentum of the momentum and nesterov optimizers.
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    momentum: f64,
    /// L2 regularization (decoupled weight decay for adamw).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    weight_decay: f64,
    /// Learning-rate schedule: constant, step (×0.1 every 5 epochs) or cosine.
    #[arg(long, value_enum, default_value = "constant")]
    schedule: ScheduleKind,
    /// Epochs of linear learning-rate warm-up.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    warmup: usize,
    /// Random horizontal flips and shifts of up to 2 pixels.
    #[arg(long)]
    augment: bool,
    /// Gaussian input jitter (standard deviation, normalized units).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    jitter: f32,
    /// cpu, cuda, cuda:N, emulated or auto.
    #[arg(long, default_value = "auto", value_parser = device_flag)]
    device: Device,
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    seed: u64,
    /// Fraction of the training set held out for validation.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    val_fraction: f64,
    /// Early stopping: stop after this many epochs without a better validation accuracy.
    #[arg(long, allow_negative_numbers = true)]
    patience: Option<usize>,
    /// Random restarts: train from this many seeds and keep the best by validation accuracy.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    restarts: usize,
    /// The data's format: fashion-mnist, mnist-idx (MNIST-format IDX files: MNIST, KMNIST, EMNIST,
    /// your own), cifar10, cifar100 (binary versions) or folder (DIR/train/CLASS/*.png|jpg and
    /// DIR/test/CLASS/..., or DIR/CLASS/... with --val-fraction of each class held out as the test
    /// set). Default: detected from what is in --data; Fashion-MNIST without --data.
    #[arg(long, value_enum)]
    dataset: Option<DatasetKind>,
    /// The dataset's folder (for Fashion-MNIST the default is $KILN_DATA, then
    /// /usr/share/datasets/fashion-mnist; for IDX files, DIR/PREFIX picks e.g. emnist-balanced).
    #[arg(long)]
    data: Option<PathBuf>,
    /// CIFAR-100's labels: fine (100 classes, the default) or coarse (20 superclasses).
    #[arg(long, value_enum)]
    labels: Option<CifarLabels>,
    /// Image folders: resize the shorter side to N (bilinear) and center-crop NxN. Without it
    /// every image must have the same size.
    #[arg(long, value_name = "N")]
    image_size: Option<usize>,
    /// Image folders: 1 (greyscale) or 3 (RGB) channels; default 1 when every image is greyscale,
    /// else 3.
    #[arg(long)]
    channels: Option<usize>,
    /// Image folders: the most memory the decoded images may take, e.g. 4G (default: half of
    /// the available memory); kiln keeps them in memory and refuses a folder that needs more.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    cache_limit: Option<u64>,
    /// Output directory for checkpoints, metrics.csv, curves.png and filters.png.
    #[arg(long, default_value = "runs/latest")]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint, exactly as it was trained: the model,
    /// data settings, batch size, seed, optimizer and its settings, schedule and precision are
    /// read from the checkpoint. A flag given with a different value is refused (start a fresh
    /// run instead); --epochs may be raised to train longer.
    #[arg(long)]
    resume: bool,
    /// Let a new run replace the results (checkpoints, metrics.csv, plots) of another run in --out;
    /// without it, a new run in a directory holding results is refused.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Train on only the first N training images (quick runs).
    #[arg(long, allow_negative_numbers = true)]
    limit_train: Option<usize>,
    /// f32, or mixed precision: bf16 or f16 activations and matrix products (tensor cores on a
    /// GPU) with f32 master weights, as PyTorch's autocast; bf16-products and f16-products keep
    /// activations in f32 and round only the products' operands. f16 adds dynamic loss scaling.
    #[arg(long, value_enum, default_value = "f32")]
    precision: Precision,
    /// Replay each training step from a CUDA graph: one launch per step instead of one per kernel
    /// (GPU devices; f32, bf16 or bf16-products: f16 needs the host each step). A last, smaller
    /// batch of an epoch takes an ordinary step.
    #[arg(long)]
    cuda_graph: bool,
    /// Kernel choices on the GPU: `default`, or a comma list of large-tiles (128x128 f32 tiles),
    /// flat-tiles (flat tiles for products with at most 32 rows), wgmma (Hopper warpgroup MMA for
    /// 16-bit products, TMA loads), wgmma-cp-async (wgmma with cp.async loads), wgmma-wide
    /// (wgmma with 128x256 TMA tiles), conv-chunk-bytes=N (the convolution's column budget).
    #[arg(long, default_value = "default", value_parser = kernels_flag)]
    kernels: cuda::KernelPolicy,
    /// Fine-tuning: start from the weights in FILE, a kiln checkpoint or a safetensors
    /// state_dict (e.g. torchvision's, saved with safetensors.torch.save_file), matched by
    /// parameter name and shape; int64 buffers such as num_batches_tracked are ignored.
    #[arg(long, value_name = "FILE")]
    init: Option<PathBuf>,
    /// Freeze the parameters whose names match the glob PATTERN (e.g. 'layer1.*', '0.*'):
    /// they get no gradient and no optimizer state. Repeatable.
    #[arg(long, value_name = "PATTERN")]
    freeze: Vec<String>,
    /// With --init: start the classifier head (the last 2-D weight and its bias) afresh for the
    /// data's classes instead of loading it (needed when the class counts differ).
    #[arg(long, requires = "init")]
    reset_head: bool,
    /// With --freeze: a batch norm whose weight and bias are both frozen normalizes with its
    /// running statistics and keeps them unchanged in training (eval, as torchvision's
    /// FrozenBatchNorm2d), or with the batch's statistics, updating the running ones (train,
    /// PyTorch's plain requires_grad=False).
    #[arg(long, value_enum, default_value = "eval")]
    frozen_bn: train::FrozenBn,
    /// Under mpirun: batch norm normalizes with the statistics of the whole global batch, summed
    /// over the ranks in every training step (PyTorch's SyncBatchNorm), instead of each rank's
    /// own batch (the default, as DDP). With one rank it is plain batch norm.
    #[arg(long)]
    sync_bn: bool,
    /// Label smoothing EPS in [0, 1) for the training loss: the target puts 1 - EPS on the label
    /// and EPS/classes on every class (PyTorch's F.cross_entropy(label_smoothing=EPS)).
    #[arg(long, value_name = "EPS", default_value_t = 0.0)]
    label_smoothing: f64,
    /// One weight per class for the training loss, comma-separated (PyTorch's
    /// F.cross_entropy(weight=...): the batch's loss is divided by the sum of its labels'
    /// weights). Validation and test losses stay the plain cross-entropy.
    #[arg(long, value_name = "W,W,...", value_delimiter = ',')]
    class_weights: Option<Vec<f64>>,
}

impl TrainArgs {
    fn config(&self) -> TrainConfig {
        TrainConfig {
            model: self.model,
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            optimizer: self.optimizer,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            schedule: self.schedule,
            warmup_epochs: self.warmup,
            augment: self.augment,
            jitter: self.jitter,
            device: self.device,
            seed: self.seed,
            val_fraction: self.val_fraction,
            patience: self.patience,
            restarts: self.restarts,
            out: self.out.clone(),
            resume: self.resume,
            overwrite: self.overwrite,
            limit_train: self.limit_train,
            precision: self.precision,
            cuda_graph: self.cuda_graph,
            kernels: self.kernels,
            init: self
                .init
                .as_ref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
            freeze: self.freeze.clone(),
            reset_head: self.reset_head,
            frozen_bn: self.frozen_bn,
            sync_bn: self.sync_bn,
            criterion: kiln::ops::CrossEntropy {
                label_smoothing: self.label_smoothing,
                class_weights: self.class_weights.clone(),
            },
        }
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// The run's configuration: the flags, and with --resume the checkpoint's value of each recorded
/// flag not given on the command line (`explicit` says which were).
fn train_config(
    args: &TrainArgs,
    explicit: &dyn Fn(&str) -> bool,
) -> Result<TrainConfig, Box<dyn std::error::Error>> {
    let mut config = args.config();
    if config.resume {
        let last = train::RunFiles::new(&config.out).last;
        let (_, meta) = train::load_run_checkpoint(&last)?;
        for (flag, value) in meta.saved_flags() {
            if !explicit(&flag) {
                config
                    .set_resume_flag(&flag, &value)
                    .map_err(|e| format!("{}: {e}", last.display()))?;
            }
        }
    }
    Ok(config)
}

/// Ctrl-C: the first asks the run to stop at its next step boundary, a second exits at once
/// (removing the run's lock and temporary files first).
fn handle_ctrl_c() -> Result<(), ctrlc::Error> {
    let pressed = std::sync::atomic::AtomicBool::new(false);
    ctrlc::set_handler(move || {
        if pressed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            eprintln!("\nkiln: interrupted again: exiting now");
            train::exit_removing_tracked_files(130);
        }
        eprintln!("\nkiln: stopping at the next step (press Ctrl-C again to quit at once)");
        train::request_stop();
    })
}

/// The command that continues the run in `args.out`.
fn resume_command(args: &TrainArgs) -> String {
    let quote = |p: &std::path::Path| {
        let s = p.display().to_string();
        match s.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
            true => format!("'{}'", s.replace('\'', "'\\''")),
            false => s,
        }
    };
    let mut command = format!("kiln train --resume --out {}", quote(&args.out));
    if let Some(kind) = args.dataset {
        command.push_str(&format!(" --dataset {}", kind.name()));
    }
    if let Some(data) = &args.data {
        command.push_str(&format!(" --data {}", quote(data)));
    }
    command
}

fn run_train(args: &TrainArgs, explicit: &dyn Fn(&str) -> bool) -> CliResult {
    handle_ctrl_c()?;
    let config = train_config(args, explicit)?;
    // Bad numbers are reported before the data is read.
    config.validate()?;
    println!(
        "training {} on {} for {} epochs (batch {}, {} lr {}, {}{}, kernels {}), output in {}",
        config.model.name(),
        config.device,
        config.epochs,
        config.batch_size,
        config.optimizer.name(),
        config.lr,
        config.precision.name(),
        if config.cuda_graph {
            ", CUDA graph"
        } else {
            ""
        },
        config.kernels,
        config.out.display()
    );
    if config.device == Device::Cpu && config.precision != Precision::F32 {
        println!(
            "note: the CPU computes {} by rounding f32 values as a GPU would store them, which is \
             slower than f32 there; the 16-bit precisions are for GPUs",
            config.precision.name()
        );
    }
    if let Some(init) = &config.init {
        println!(
            "fine-tuning from {}{}{}",
            init.display(),
            if config.reset_head {
                ", classifier head reset"
            } else {
                ""
            },
            match config.freeze.is_empty() {
                true => String::new(),
                false => format!(
                    ", frozen: {} (frozen batch norms: {})",
                    config.freeze.join(" "),
                    config.frozen_bn.name()
                ),
            }
        );
    }
    let spec = train_data_spec(args, &config)?;
    println!("data: {spec}");
    let data = spec.load(args.cache_limit)?;
    let [c, h, w] = data.sample_shape();
    println!(
        "{}: {} training and {} test samples of {c}x{h}x{w}, {} classes",
        data.name,
        data.train.len(),
        data.test.len(),
        data.num_classes()
    );
    let summary = match train::train(&config, &data) {
        Err(e @ train::TrainError::Interrupted { last_epoch, .. }) => {
            let hint = match last_epoch {
                Some(_) => format!("resume with: {}", resume_command(args)),
                None => "start it again to train".to_string(),
            };
            return Err(Interrupted(format!("{e}\n{hint}")).into());
        }
        other => other?,
    };
    println!("\n{}", summary.confusion);
    if summary.best_val_accuracy.is_finite() {
        println!(
            "best validation accuracy {:.2}% (restart {}, epoch {})",
            100.0 * summary.best_val_accuracy,
            summary.best_restart + 1,
            summary.best_epoch + 1
        );
    }
    println!(
        "test accuracy {:.2}%, test loss {:.4}",
        100.0 * summary.test_accuracy,
        summary.test_loss
    );
    println!(
        "wrote best.safetensors, last.safetensors, metrics.csv, curves.png, filters.png in {}",
        summary.out.display()
    );
    Ok(())
}

/// The data `kiln train` reads: --dataset (or the kind detected in --data) with its options; when
/// resuming without either, the data the checkpoint records.
fn train_data_spec(
    args: &TrainArgs,
    config: &TrainConfig,
) -> Result<DataSpec, Box<dyn std::error::Error>> {
    if config.resume && args.dataset.is_none() && args.data.is_none() {
        let last = train::RunFiles::new(&config.out).last;
        let (_, meta) = train::load_run_checkpoint(&last)?;
        if let Some(origin) = meta.dataset.origin {
            return Ok(origin);
        }
    }
    let kind = match (args.dataset, &args.data) {
        (Some(kind), _) => kind,
        (None, Some(path)) => detect(path)?,
        (None, None) => DatasetKind::FashionMnist,
    };
    let mut spec = DataSpec::new(kind, args.data.as_deref());
    let refuse = |flag: &str, applies: &str| -> Result<(), Box<dyn std::error::Error>> {
        Err(format!(
            "{flag} applies to --dataset {applies}, and the data is {}",
            kind.name()
        )
        .into())
    };
    if let Some(labels) = args.labels {
        if kind != DatasetKind::Cifar100 {
            refuse("--labels", "cifar100")?;
        }
        spec.labels = labels;
    }
    for (flag, given) in [
        ("--image-size", args.image_size.is_some()),
        ("--channels", args.channels.is_some()),
        ("--cache-limit", args.cache_limit.is_some()),
    ] {
        if given && kind != DatasetKind::Folder {
            refuse(flag, "folder")?;
        }
    }
    if kind == DatasetKind::Folder {
        spec.image_size = args.image_size;
        spec.channels = args.channels;
        spec.test_fraction = Some(config.val_fraction);
    }
    Ok(spec)
}

/// The data `kiln eval` reads: the checkpoint's recorded data, with --dataset and --data
/// replacing its kind or path (the recorded options are kept for the same kind).
fn eval_data_spec(
    recorded: Option<DataSpec>,
    dataset: Option<DatasetKind>,
    data: Option<&std::path::Path>,
) -> Result<DataSpec, Box<dyn std::error::Error>> {
    let kind = match (dataset, data, &recorded) {
        (Some(kind), _, _) => kind,
        (None, _, Some(spec)) => spec.kind,
        (None, Some(path), None) => detect(path)?,
        (None, None, None) => DatasetKind::FashionMnist,
    };
    let mut spec = match recorded {
        Some(spec) if spec.kind == kind => spec,
        _ => DataSpec::new(kind, None),
    };
    if let Some(path) = data {
        spec.path = Some(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
    }
    Ok(spec)
}

/// `kiln eval`: the checkpoint's model, built and normalized from the dataset description it
/// records (or, for a plain state_dict, from the flags), on the test set of its data (or of
/// --dataset/--data; an image folder is read at the model's input size and channels).
fn run_eval(
    checkpoint: &std::path::Path,
    plain: &PlainFileArgs,
    (dataset, data): (Option<DatasetKind>, Option<&std::path::Path>),
    device: Device,
) -> CliResult {
    device.check_available()?;
    let loaded = train::load_model_file(checkpoint, &plain.flags(), device)?;
    let recorded = loaded.info.origin.clone();
    let mut spec = eval_data_spec(recorded.clone(), dataset, data)?;
    if loaded.meta.is_none() && spec.kind == DatasetKind::Folder {
        let [c, side, _] = loaded.info.sample_shape;
        spec.image_size = Some(side);
        spec.channels = Some(c);
    }
    println!("data: {spec}");
    let test = spec.load(None)?.test()?;
    let result = train::evaluate_loaded(loaded, test, device)?;
    let eval = &result.evaluation;
    println!("{}", result.confusion);
    println!(
        "test accuracy {:.2}%, loss {:.4} ({} images)",
        100.0 * eval.accuracy,
        eval.loss,
        eval.labels.len()
    );
    Ok(())
}

/// `kiln predict`: the top classes of each image, as a table or one JSON object per line.
fn run_predict(args: &PredictArgs) -> CliResult {
    let files = train::image_inputs(&args.inputs)?;
    let mut predictor =
        train::Predictor::load_with(&args.checkpoint, &args.plain.flags(), args.device)?;
    let predictions = predictor.predict(&files, args.top_k, args.batch_size)?;
    for p in &predictions {
        if args.json {
            println!("{}", serde_json::to_string(p)?);
            continue;
        }
        println!("{}", p.path.display());
        for score in &p.top {
            println!(
                "  {:>6.2}%  {} ({})",
                100.0 * score.probability,
                score.name,
                score.class
            );
        }
    }
    Ok(())
}

/// `kiln train` under `mpirun`/`srun` runs on every rank (MPI started first, finalized last); a
/// rank that fails ends the whole job (MPI_Abort), so no other rank waits at a collective.
fn on_every_rank(train: impl FnOnce() -> CliResult) -> CliResult {
    let session = kiln::dist::init()?;
    let result = train();
    if let Err(e) = &result {
        session.abort_if_distributed(&e.to_string());
    }
    result
}

/// `kiln summary`: the model for samples of `input` ([C, H, W]) and `classes` classes.
fn run_summary(arch: Architecture, input: [usize; 3], classes: usize) -> CliResult {
    let mut net = arch.build_for(input, classes, 0, Device::Cpu)?;
    let [c, h, w] = input;
    println!("{} for {c}x{h}x{w} inputs, {classes} classes", arch.name());
    if let Some(variant) = arch.variant(h) {
        println!("{variant}");
    }
    println!(
        "{:<12} {:<58} {:>16} {:>10}",
        "layer", "", "output", "params"
    );
    for row in summarize(&mut net, input)? {
        let shape = row
            .output_shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        println!(
            "{:<12} {:<58} {:>16} {:>10}",
            row.name, row.description, shape, row.parameters
        );
    }
    println!("total parameters: {}", net.parameter_count());
    Ok(())
}

fn run_info() -> CliResult {
    println!("kiln {}", env!("CARGO_PKG_VERSION"));
    println!(
        "kernels: {} ({} kernels; PTX for {}; machine code for {}; emulation always built)",
        if cuda::built_with_kernels() {
            "compiled by nvcc"
        } else {
            "NOT compiled (no nvcc at build time)"
        },
        cuda::kernel_names().len(),
        if cuda::built_with_kernels() {
            cuda::ptx_targets().join(" and ")
        } else {
            cuda::ptx_arch().to_string()
        },
        match cuda::sass_targets() {
            t if t.is_empty() => "none (the driver JIT-compiles the PTX)".to_string(),
            t => t.join(", "),
        }
    );
    println!("{}", kiln::dist::support());
    println!("best device: {}", Device::best());
    match cuda::cuda_unavailable_reason(0) {
        None => {
            for ordinal in 0..cuda::usable_gpu_count() {
                println!("cuda:{ordinal}: {}", cuda::describe(Device::Cuda(ordinal))?);
            }
        }
        Some(why) => println!("cuda: unavailable: {why}"),
    }
    // The policy the best GPU (or else the emulation) launches under; `kiln train --kernels`
    // sets another for its run.
    let gpu = match Device::best() {
        Device::Cpu => Device::CudaEmulated,
        d => d,
    };
    println!("kernel policy on {gpu}: {}", cuda::kernel_policy(gpu)?);
    println!("cpu: {} threads (rayon)", rayon::current_num_threads());
    Ok(())
}

/// `kiln selftest`: the table on stdout, each row flushed as it is measured (and written to the
/// JSON file, if any); whether every row passed.
fn run_selftest(
    device: &str,
    json: Option<&std::path::Path>,
) -> Result<bool, Box<dyn std::error::Error>> {
    use std::io::Write;
    let device = Device::parse(device)?;
    let options = selftest::Options::from_env();
    if let Some(family) = options.planted_family()? {
        eprintln!(
            "{}={family}: the rows of that family fail on purpose (for tests only)",
            selftest::PLANT_FAILURE_VAR
        );
    }
    // Opening a GPU loads every module (the driver JIT-compiles PTX it has no machine code for).
    let opening = std::time::Instant::now();
    let description = selftest::device_description(device)?;
    let opened = opening.elapsed().as_secs_f64();
    let mut json = match json {
        Some(path) => Some((
            std::fs::File::create(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?,
            path,
        )),
        None => None,
    };
    let mut json_error = None;
    let mut write_json = |value: serde_json::Value| {
        if let Some((file, path)) = &mut json {
            let written = writeln!(file, "{value}").and_then(|()| file.flush());
            if let Err(e) = written {
                json_error.get_or_insert(format!("writing {}: {e}", path.display()));
            }
        }
    };
    let mut out = std::io::stdout();
    writeln!(
        out,
        "kiln selftest on {device}: {description} (opened in {opened:.2} s)"
    )?;
    writeln!(out, "{}", selftest::table_header())?;
    out.flush()?;
    let report = selftest::run(device, &options, &mut |row| {
        // A closed stdout ends the process (SIGPIPE); nothing else can fail here.
        let _ = writeln!(out, "{}", row.table_line()).and_then(|()| out.flush());
        write_json(row.to_json(device));
    })?;
    writeln!(out, "{}", report.verdict())?;
    out.flush()?;
    write_json(report.verdict_json());
    match json_error {
        Some(e) => Err(e.into()),
        None => Ok(report.passed()),
    }
}

/// A run stopped by Ctrl-C: exit status 130, as a shell reports a process ended by SIGINT.
#[derive(Debug)]
struct Interrupted(String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Whether the train flag with clap id `id` (`batch_size`) was given on the command line.
fn given_on_command_line(matches: &clap::ArgMatches, id: &str) -> bool {
    let train = matches.subcommand_matches("train").unwrap_or(matches);
    matches!(
        train.try_get_raw(id).ok().and(train.value_source(id)),
        Some(clap::parser::ValueSource::CommandLine)
    )
}

fn main() -> ExitCode {
    kiln::backend::retain_freed_host_memory();
    // Rust ignores SIGPIPE, which turns a closed pipe (`kiln info | head -1`) into a panic in
    // println!; a command-line tool should simply stop, as the default action does.
    #[cfg(unix)]
    // SAFETY: called first thing, before any other thread exists; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match &cli.command {
        Command::Train(args) => on_every_rank(|| {
            run_train(args, &|flag: &str| {
                given_on_command_line(&matches, &flag.trim_start_matches("--").replace('-', "_"))
            })
        }),
        Command::Eval {
            checkpoint,
            plain,
            dataset,
            data,
            device,
        } => run_eval(checkpoint, plain, (*dataset, data.as_deref()), *device),
        Command::Summary {
            model,
            input,
            classes,
        } => run_summary(*model, *input, *classes),
        Command::Predict(args) => run_predict(args),
        Command::Info => run_info(),
        Command::Selftest { device, json } => {
            return match run_selftest(device, json.as_deref()) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("kiln selftest: {e}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Interrupted>() => {
            eprintln!("kiln: {e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("kiln: {e}");
            ExitCode::FAILURE
        }
    }
}
