//! Throughput benchmark: lexmesh against the PyTorch reference in one run, same machine, same
//! thread count (`cargo bench --bench throughput`). Prints examples/second of both and their
//! ratio for the two reference models, and Persian preprocessing throughput against hazm.
//!
//! The architectures and data shapes are those documented in
//! `benches/reference/pytorch_reference.py`: batch 64, length 128, vocabulary 20,000, embedding
//! 128, 10 classes; `bow` with an MLP of 256, `cnn` with kernels 3/4/5 × 100 filters and dropout
//! 0.5; Adam lr 1e-3, eps 1e-8.
//! lexmesh runs its real training loop ([`lexmesh_trainer::training::train`]), on a thread of
//! its own as the product runs it, on 16 distinct synthetic batches per epoch; the first epoch
//! is warm-up, the median of the rest is reported.
//! PyTorch gets the same: 16 warm-up steps, then one timed window of 16 steps per lexmesh epoch
//! after the first, the median window reported. A run that fails counts as a failure on its
//! side and gives no figure; the rounds interleave lexmesh, PyTorch, PyTorch with lexmesh's
//! allocator setting, and PyTorch with that setting and Adam's fused step (`fused=True`, the step
//! lexmesh's trainer takes: `services/trainer/src/optimizer.rs`).
//!
//! Options (after `--`): `--threads N` (2), `--epochs N` (5), `--rounds N` (3), `--preprocessing-only`, `--data FILE` (the rulings train
//! split), `--python PATH` (`.tools/bench-venv/bin/python`), `--skip-reference`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use lexmesh_preprocessor::{
    Dataset, Encoded, FieldNames, Normalizer, NormalizerConfig, Tokenizer, WordTokenizer,
};
use lexmesh_trainer::progress::{ProgressEvent, RecordingSink};
use lexmesh_trainer::training::{TrainingData, TrainingRun, train};
use lexmesh_trainer::{CancelToken, ClassWeighting, ExperimentConfig, ModelKind};
use rand::{RngExt, SeedableRng};
#[path = "common/stats.rs"]
mod stats;
use stats::median;

const BATCH: usize = 64;
const LENGTH: usize = 128;
const VOCAB: usize = 20_000;
const DIM: usize = 128;
const HIDDEN: usize = 256;
const CLASSES: usize = 10;
const BATCHES_PER_EPOCH: usize = 16;

struct Options {
    threads: usize,
    epochs: usize,
    data: PathBuf,
    python: PathBuf,
    reference: bool,
    rounds: usize,
    training: bool,
}

fn options() -> Options {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut o = Options {
        threads: 2,
        epochs: 5,
        data: root.join("../shared/data/iran-court-rulings/train.jsonl"),
        python: root.join(".tools/bench-venv/bin/python"),
        reference: true,
        rounds: 3,
        training: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => {
                o.threads = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(o.threads)
            }
            "--epochs" => o.epochs = args.next().and_then(|v| v.parse().ok()).unwrap_or(o.epochs),
            "--data" => o.data = args.next().map(PathBuf::from).unwrap_or(o.data),
            "--python" => o.python = args.next().map(PathBuf::from).unwrap_or(o.python),
            "--skip-reference" => o.reference = false,
            "--preprocessing-only" => o.training = false,
            "--rounds" => {
                o.rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(o.rounds)
                    .max(1)
            }
            _ => {} // cargo bench passes --bench
        }
    }
    o
}

/// Synthetic examples: ids uniform in [1, VOCAB), labels uniform, as the reference draws them.
fn synthetic(n: usize, bag: bool, seed: u64) -> (Vec<Encoded>, Vec<usize>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut inputs = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let ids: Vec<u32> = (0..LENGTH)
            .map(|_| rng.random_range(1..VOCAB as u32))
            .collect();
        let weights = if bag {
            vec![1.0 / LENGTH as f32; LENGTH]
        } else {
            Vec::new()
        };
        inputs.push(Encoded { ids, weights });
        labels.push(rng.random_range(0..CLASSES));
    }
    (inputs, labels)
}

fn lexmesh_examples_per_sec(kind: ModelKind, o: &Options) -> f64 {
    let mut config = ExperimentConfig::for_kind(kind);
    config.model.embedding_dim = DIM;
    config.model.hidden = HIDDEN;
    config.model.dropout = if kind == ModelKind::Cnn { 0.5 } else { 0.0 };
    config.model.kernel_sizes = vec![3, 4, 5];
    config.model.filters = 100;
    config.features.max_length = LENGTH;
    let t = &mut config.training;
    t.epochs = o.epochs;
    t.batch_size = BATCH;
    t.learning_rate = 1e-3;
    t.adam_epsilon = 1e-8;
    // As in the reference's `torch.optim.Adam` (the kinds' defaults may set them: the bow
    // default's L2 penalty would add a pass over every parameter that PyTorch does not make).
    t.weight_decay = 0.0;
    t.gradient_clip = 0.0;
    t.patience = 0;
    t.class_weights = ClassWeighting::None;
    t.threads = o.threads;
    let bag = kind == ModelKind::Bow;
    let (train_x, train_y) = synthetic(BATCH * BATCHES_PER_EPOCH, bag, 1);
    let (val_x, val_y) = synthetic(BATCH, bag, 2);
    let run = TrainingRun {
        config,
        classes: CLASSES,
        feature_space: VOCAB,
        data: TrainingData {
            train: train_x,
            train_labels: train_y,
            validation: val_x,
            validation_labels: val_y,
        },
        checkpoints: None,
        resume: false,
        fingerprint: String::new(),
        compute_threads: 0,
        checkpoint_interval: None,
    };
    let mut sink = RecordingSink::default();
    // On a thread of its own, as `lexmesh train` and the trainer service run a job
    // (`training::spawn`): the allocator serves a thread from other heaps than the main one.
    let trained = std::thread::scope(|scope| {
        scope
            .spawn(|| train(&run, &mut sink, &CancelToken::new()))
            .join()
    });
    let Ok(trained) = trained else {
        eprintln!("lexmesh {kind:?} panicked");
        return f64::NAN;
    };
    if let Err(e) = trained {
        eprintln!("lexmesh {kind:?} failed: {e}");
        return f64::NAN;
    }
    let per_epoch: Vec<f64> = sink
        .0
        .iter()
        .filter_map(|e| match e {
            ProgressEvent::Epoch(p) if p.epoch > 1 => Some(p.examples_per_sec),
            _ => None,
        })
        .collect();
    median(per_epoch)
}

fn reference(
    o: &Options,
    script: &str,
    args: &[&str],
    same_allocator: bool,
) -> Option<serde_json::Value> {
    if !o.reference {
        return None;
    }
    if !o.python.exists() {
        eprintln!(
            "(no {}: run benches/setup-pytorch for the reference figures)",
            o.python.display()
        );
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/reference")
        .join(script);
    let mut cmd = Command::new(&o.python);
    if same_allocator {
        // The allocator setting lexmesh applies to itself (device::tune_allocator), given to
        // PyTorch too, so that comparison is like for like.
        cmd.envs(lexmesh_trainer::device::allocator_environment());
    }
    let out = cmd.arg(script).args(args).output().ok()?;
    if !out.status.success() {
        eprintln!("reference failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
}

fn preprocessing_mb_per_sec(data: &Path) -> Option<(f64, f64, f64)> {
    let dataset = Dataset::load(data, &FieldNames::default()).ok()?;
    let texts: Vec<&str> = dataset.examples.iter().map(|e| e.text.as_str()).collect();
    let mb = texts.iter().map(|t| t.len()).sum::<usize>() as f64 / 1e6;
    let normalizer = Normalizer::new(NormalizerConfig::default());
    let mut runs = Vec::new();
    let mut tokens = 0usize;
    for _ in 0..5 {
        let start = Instant::now();
        tokens = 0;
        for t in &texts {
            let n = normalizer.normalize(t);
            let mut out = Vec::new();
            WordTokenizer.tokenize(&n, &mut out);
            tokens += out.len();
        }
        runs.push(mb / start.elapsed().as_secs_f64());
    }
    std::hint::black_box(tokens);
    Some((mb, median(runs), tokens as f64))
}

fn main() {
    let o = options();
    // As the product does before it starts the thread that trains.
    lexmesh_trainer::device::tune_allocator();
    println!(
        "lexmesh throughput benchmark (threads {}, epochs {} of {} batches, first is warm-up)",
        o.threads, o.epochs, BATCHES_PER_EPOCH
    );
    println!(
        "shape: batch {BATCH}, length {LENGTH}, vocab {VOCAB}, dim {DIM}, hidden {HIDDEN}, classes {CLASSES}"
    );
    println!();
    println!(
        "{:<6} {:>13} {:>13} {:>7} {:>16} {:>7} {:>16} {:>7}   (medians of {} interleaved rounds)",
        "model",
        "lexmesh ex/s",
        "pytorch ex/s",
        "ratio",
        "pytorch+alloc",
        "ratio",
        "pytorch fused",
        "ratio",
        o.rounds
    );
    let threads = o.threads.to_string();
    let kinds = if o.training {
        &[(ModelKind::Bow, "bow"), (ModelKind::Cnn, "cnn")][..]
    } else {
        &[]
    };
    for &(kind, name) in kinds {
        // Like for like: PyTorch warms up for one lexmesh epoch (16 batches), then times
        // windows of 16 steps, one per lexmesh epoch after the first, and reports their median
        // as lexmesh reports the median of its epochs.
        let windows = o.epochs.saturating_sub(1).max(1).to_string();
        let batches = BATCHES_PER_EPOCH.to_string();
        let args = [
            "--model",
            name,
            "--threads",
            &threads,
            "--warmup",
            &batches,
            "--steps",
            &batches,
            "--windows",
            &windows,
        ];
        let fused_args: Vec<&str> = args.iter().copied().chain(["--fused"]).collect();
        // The PyTorch sides: stock (its own allocator defaults, its default Adam step), with
        // lexmesh's allocator setting, and with that setting and Adam's fused step (the step
        // lexmesh takes).
        let sides: [(&str, &[&str], bool); 3] = [
            ("pytorch", &args, false),
            ("pytorch+alloc", &args, true),
            ("pytorch fused", &fused_args, true),
        ];
        let mut failed = [0usize; 4];
        let mut ours = Vec::new();
        let mut theirs: [Vec<f64>; 3] = Default::default();
        for _ in 0..o.rounds {
            // A failed run counts on its side and gives no figure.
            match lexmesh_examples_per_sec(kind, &o) {
                v if v.is_finite() => ours.push(v),
                _ => failed[0] += 1,
            }
            for (side, &(_, side_args, same_allocator)) in sides.iter().enumerate() {
                let reference = o.reference.then(|| {
                    reference(&o, "pytorch_reference.py", side_args, same_allocator)
                        .and_then(|v| v["examples_per_sec"].as_f64())
                });
                match reference {
                    Some(Some(v)) => theirs[side].push(v),
                    Some(None) if o.python.exists() => failed[side + 1] += 1,
                    _ => {}
                }
            }
        }
        if failed.iter().any(|&f| f > 0) {
            println!(
                "{name}: failed runs: lexmesh {}, {} {}, {} {}, {} {} (of {})",
                failed[0],
                sides[0].0,
                failed[1],
                sides[1].0,
                failed[2],
                sides[2].0,
                failed[3],
                o.rounds
            );
        }
        let ours = if ours.is_empty() {
            f64::NAN
        } else {
            median(ours)
        };
        let cell = |v: Vec<f64>| match v.is_empty() {
            false => {
                let p = median(v);
                (format!("{p:.0}"), format!("{:.2}x", ours / p))
            }
            true => ("-".to_string(), "-".to_string()),
        };
        let [plain, padded, fused] = theirs;
        let ((p1, r1), (p2, r2), (p3, r3)) = (cell(plain), cell(padded), cell(fused));
        println!("{name:<6} {ours:>13.0} {p1:>13} {r1:>7} {p2:>16} {r2:>7} {p3:>16} {r3:>7}");
    }
    println!();
    match preprocessing_mb_per_sec(&o.data) {
        Some((mb, ours, tokens)) => {
            let hazm = reference(
                &o,
                "hazm_reference.py",
                &["--data", &o.data.to_string_lossy()],
                false,
            )
            .and_then(|v| v["mb_per_sec"].as_f64());
            println!(
                "preprocessing (normalise + word-tokenise, one core) of {} ({mb:.2} MB, {tokens:.0} tokens):",
                o.data.display()
            );
            match hazm {
                Some(h) => println!(
                    "  lexmesh {ours:.1} MB/s, hazm {h:.2} MB/s: {:.1}x",
                    ours / h
                ),
                None => println!("  lexmesh {ours:.1} MB/s (hazm not measured)"),
            }
        }
        None => println!("preprocessing: cannot read {}", o.data.display()),
    }
}
