//! A stop request (`kiln::train::request_stop`, what the command line's Ctrl-C handler calls) is
//! used up by the run that stops for it: a later run in the same process trains. Alone in its
//! binary because the request is process-wide and would stop other tests' runs.

use kiln::data::{Dataset, InMemoryDataset};
use kiln::train::{request_stop, train, TrainConfig, TrainError};
use kiln::Device;

/// 4-class 1x16x16 images: class c has a bright pixel in row 4c.
fn dataset(count: usize) -> Dataset {
    let mut images = vec![0.0f32; count * 256];
    let labels: Vec<i32> = (0..count).map(|n| (n % 4) as i32).collect();
    for (n, image) in images.chunks_mut(256).enumerate() {
        image[(n % 4) * 64 + n % 16] = 1.0;
    }
    Dataset::new(images, labels, [1, 16, 16], 4).unwrap()
}

#[test]
fn a_stop_request_stops_one_run_and_not_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["a", "b", "c", "d"].map(String::from).to_vec();
    let data = InMemoryDataset::new("rows", names, dataset(64), dataset(16)).unwrap();
    let config = |out: &str| TrainConfig {
        epochs: 1,
        batch_size: 16,
        device: Device::Cpu,
        val_fraction: 0.25,
        out: dir.path().join(out),
        ..TrainConfig::default()
    };
    request_stop();
    let stopped = train(&config("first"), &data).unwrap_err();
    assert!(
        matches!(stopped, TrainError::Interrupted { .. }),
        "{stopped}"
    );
    let summary = train(&config("second"), &data).unwrap();
    assert_eq!(summary.history.len(), 1, "the second run trained its epoch");
}
