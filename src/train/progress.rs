//! Progress of a training epoch: an indicatif bar (loss, accuracy, images/s, ETA) when stderr is a
//! terminal, plain lines every N batches and at the end of each epoch when it is not (logs, CI).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Totals of one epoch's training batches, as [`Progress::finish_epoch`] reports them.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochTotals {
    pub epoch: usize,
    pub batches: usize,
    pub images: u64,
    /// Mean loss per image (each batch's loss weighted by its image count).
    pub loss: f64,
    /// Fraction of images classified correctly.
    pub accuracy: f64,
    pub seconds: f64,
    pub images_per_sec: f64,
}

enum Sink {
    /// The bar of the current epoch (`None` between epochs).
    Bar(Option<ProgressBar>),
    Plain(Box<dyn Write + Send>),
}

/// Reports training progress. Call [`start_epoch`](Progress::start_epoch), then
/// [`batch`](Progress::batch) after each batch, then [`finish_epoch`](Progress::finish_epoch).
pub struct Progress {
    sink: Sink,
    epochs: usize,
    batches: usize,
    every: usize,
    epoch: usize,
    done: usize,
    images: u64,
    correct: u64,
    loss_sum: f64,
    started: Instant,
}

impl Progress {
    /// A bar on stderr when stderr is a terminal; otherwise plain lines on stderr about ten times
    /// per epoch and at its end.
    pub fn new(epochs: usize, batches_per_epoch: usize) -> Progress {
        let sink = if std::io::stderr().is_terminal() {
            Sink::Bar(None)
        } else {
            Sink::Plain(Box::new(std::io::stderr()))
        };
        Progress::with_sink(
            sink,
            epochs,
            batches_per_epoch,
            (batches_per_epoch / 10).max(1),
        )
    }

    /// Plain lines to `writer`: one every `every` batches (0: none) and one at the end of each
    /// epoch.
    pub fn plain(
        writer: impl Write + Send + 'static,
        epochs: usize,
        batches_per_epoch: usize,
        every: usize,
    ) -> Progress {
        Progress::with_sink(
            Sink::Plain(Box::new(writer)),
            epochs,
            batches_per_epoch,
            every,
        )
    }

    fn with_sink(sink: Sink, epochs: usize, batches: usize, every: usize) -> Progress {
        Progress {
            sink,
            epochs,
            batches,
            every,
            epoch: 0,
            done: 0,
            images: 0,
            correct: 0,
            loss_sum: 0.0,
            started: Instant::now(),
        }
    }

    /// Whether this shows a terminal bar (rather than plain lines).
    pub fn is_bar(&self) -> bool {
        matches!(self.sink, Sink::Bar(_))
    }

    /// Starts epoch `epoch` (1-based) and its clock.
    pub fn start_epoch(&mut self, epoch: usize) {
        self.epoch = epoch;
        self.done = 0;
        self.images = 0;
        self.correct = 0;
        self.loss_sum = 0.0;
        self.started = Instant::now();
        if let Sink::Bar(bar) = &mut self.sink {
            if let Some(old) = bar.take() {
                old.finish_and_clear();
            }
            let new = ProgressBar::with_draw_target(
                Some(self.batches as u64),
                ProgressDrawTarget::stderr(),
            );
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30.cyan/blue}] {pos}/{len} {msg} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            new.set_style(style);
            new.set_prefix(format!("epoch {epoch}/{}", self.epochs));
            *bar = Some(new);
        }
    }

    /// Records one finished batch: its mean `loss`, how many of its `images` were `correct`.
    pub fn batch(&mut self, loss: f64, correct: usize, images: usize) {
        self.batch_at(Instant::now(), loss, correct, images);
    }

    fn batch_at(&mut self, now: Instant, loss: f64, correct: usize, images: usize) {
        self.done += 1;
        self.images += images as u64;
        self.correct += correct as u64;
        self.loss_sum += loss * images as f64;
        let elapsed = now.saturating_duration_since(self.started);
        let stats = self.stats(elapsed);
        let prefix = self.prefix();
        let (done, batches, every) = (self.done, self.batches, self.every);
        match &mut self.sink {
            Sink::Bar(Some(bar)) => {
                bar.set_position(done as u64);
                bar.set_message(stats);
            }
            Sink::Bar(None) => {}
            Sink::Plain(w) => {
                if every > 0 && done % every == 0 && done < batches {
                    let remaining = batches.saturating_sub(done) as u32;
                    let eta = elapsed / done as u32 * remaining;
                    // A progress line that cannot be written must not stop training.
                    let _ = writeln!(
                        w,
                        "{prefix}  batch {done}/{batches}  {stats}  eta {}",
                        clock(eta)
                    );
                    let _ = w.flush();
                }
            }
        }
    }

    /// Ends the epoch: prints its summary line and returns its totals.
    pub fn finish_epoch(&mut self) -> EpochTotals {
        self.finish_epoch_at(Instant::now())
    }

    fn finish_epoch_at(&mut self, now: Instant) -> EpochTotals {
        let elapsed = now.saturating_duration_since(self.started);
        let totals = self.totals(elapsed);
        let line = format!(
            "{}  done {} batches  {}  {:.1} s",
            self.prefix(),
            self.done,
            self.stats(elapsed),
            totals.seconds
        );
        match &mut self.sink {
            Sink::Bar(bar) => {
                if let Some(bar) = bar.take() {
                    bar.finish_and_clear();
                }
                eprintln!("{line}");
            }
            Sink::Plain(w) => {
                let _ = writeln!(w, "{line}");
                let _ = w.flush();
            }
        }
        totals
    }

    /// Prints a line (e.g. validation results) without breaking the bar.
    pub fn println(&mut self, line: &str) {
        match &mut self.sink {
            Sink::Bar(Some(bar)) => bar.println(line),
            Sink::Bar(None) => eprintln!("{line}"),
            Sink::Plain(w) => {
                let _ = writeln!(w, "{line}");
                let _ = w.flush();
            }
        }
    }

    fn prefix(&self) -> String {
        format!("epoch {}/{}", self.epoch, self.epochs)
    }

    fn totals(&self, elapsed: Duration) -> EpochTotals {
        let seconds = elapsed.as_secs_f64();
        let per_image = |x: f64| {
            if self.images > 0 {
                x / self.images as f64
            } else {
                0.0
            }
        };
        EpochTotals {
            epoch: self.epoch,
            batches: self.done,
            images: self.images,
            loss: per_image(self.loss_sum),
            accuracy: per_image(self.correct as f64),
            seconds,
            images_per_sec: if seconds > 0.0 {
                self.images as f64 / seconds
            } else {
                0.0
            },
        }
    }

    /// `loss 1.2345  acc 56.78%  1234 img/s`
    fn stats(&self, elapsed: Duration) -> String {
        let t = self.totals(elapsed);
        format!(
            "loss {:.4}  acc {:.2}%  {:.0} img/s",
            t.loss,
            100.0 * t.accuracy,
            t.images_per_sec
        )
    }
}

/// `m:ss`, or `h:mm:ss` from an hour on.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_lines_with_a_fixed_clock() {
        let out = Shared::default();
        let mut p = Progress::plain(out.clone(), 10, 6, 2);
        p.start_epoch(3);
        let t0 = p.started;
        // Six batches of 100 images, one second each.
        for i in 1..=6u64 {
            p.batch_at(t0 + Duration::from_secs(i), 1.5, 50, 100);
        }
        let totals = p.finish_epoch_at(t0 + Duration::from_secs(6));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "epoch 3/10  batch 2/6  loss 1.5000  acc 50.00%  100 img/s  eta 0:04\n\
             epoch 3/10  batch 4/6  loss 1.5000  acc 50.00%  100 img/s  eta 0:02\n\
             epoch 3/10  done 6 batches  loss 1.5000  acc 50.00%  100 img/s  6.0 s\n"
        );
        assert_eq!(totals.images, 600);
        assert_eq!(totals.batches, 6);
        assert!((totals.images_per_sec - 100.0).abs() < 1e-9);
    }

    #[test]
    fn clock_format() {
        assert_eq!(clock(Duration::from_secs(5)), "0:05");
        assert_eq!(clock(Duration::from_secs(754)), "12:34");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
    }
}
