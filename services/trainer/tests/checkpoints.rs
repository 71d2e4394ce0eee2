//! Checkpoints with real libtorch and real files: written on the writer thread while training
//! goes on, no duplicate best weights (a hard link while the best is unchanged), a crash in the
//! middle of a write leaves the previous checkpoint loadable, and a resume continues from the
//! checkpoint's epoch with the same results as an uninterrupted run; checkpoints by time in
//! the middle of an epoch, and a resume from one that goes on at the next batch, again with
//! the results of an uninterrupted run; a run cancelled before it starts trains nothing.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test stops at its first failed step

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use lexmesh_preprocessor::Encoded;
use lexmesh_trainer::checkpoint::{CheckpointDir, LoopState, SavedCheckpoint};
use lexmesh_trainer::device::select_device;
use lexmesh_trainer::progress::{NullSink, ProgressEvent, RecordingSink};
use lexmesh_trainer::training::{TrainingData, TrainingRun, train};
use lexmesh_trainer::{CancelToken, DeviceChoice, ExperimentConfig, ModelKind, TextClassifier};

const FEATURES: usize = 64;

/// A small two-class bag task: class 0 texts draw features from the lower half, class 1 from
/// the upper half, with some shared noise features.
fn rows(n: usize, offset: usize) -> (Vec<Encoded>, Vec<usize>) {
    let mut inputs = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let class = (i + offset) % 2;
        let base = 1 + class * 30;
        let ids: Vec<u32> = (0..6)
            .map(|k| (base + (i * 7 + k * 5 + offset) % 30) as u32)
            .chain([61 + (i % 3) as u32])
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let w = 1.0 / (ids.len() as f32).sqrt();
        inputs.push(Encoded {
            weights: vec![w; ids.len()],
            ids,
        });
        labels.push(class);
    }
    (inputs, labels)
}

fn run(dir: &Path, epochs: usize, resume: bool) -> TrainingRun {
    let mut config = ExperimentConfig::for_kind(ModelKind::Bow);
    config.training.epochs = epochs;
    config.training.patience = 0;
    config.training.batch_size = 8;
    config.training.threads = 1;
    let (train, train_labels) = rows(96, 0);
    let (validation, validation_labels) = rows(32, 1);
    TrainingRun {
        config,
        classes: 2,
        feature_space: FEATURES,
        data: TrainingData {
            train,
            train_labels,
            validation,
            validation_labels,
        },
        checkpoints: Some(CheckpointDir::new(dir)),
        resume,
        fingerprint: "test".into(),
        compute_threads: 0,
        checkpoint_interval: None,
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// What the listener saw of one checkpoint: its epoch, the thread it ran on, the files of the
/// folder and its loop state.
type Seen = (usize, Option<String>, Vec<String>, LoopState);

#[test]
fn checkpoints_are_written_on_the_writer_thread_one_per_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ckpt");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = seen.clone();
    let mut training = run(&root, 4, false);
    training.checkpoints = Some(CheckpointDir::new(&root).with_listener(Arc::new(
        move |saved: &SavedCheckpoint| {
            let state: LoopState =
                lexmesh_trainer::checkpoint::read_json(&saved.path.join("state.json")).unwrap();
            record.lock().unwrap().push((
                saved.epoch,
                std::thread::current().name().map(String::from),
                files(&saved.path),
                state,
            ));
        },
    )));
    let trainer_thread = std::thread::current().name().map(String::from);
    let outcome = train(&training, &mut NullSink, &CancelToken::new()).unwrap();
    assert_eq!(outcome.history.len(), 4);

    let seen = seen.lock().unwrap();
    let epochs: Vec<usize> = seen.iter().map(|s| s.0).collect();
    assert_eq!(
        epochs,
        vec![1, 2, 3, 4],
        "one checkpoint per epoch, in order"
    );
    for (epoch, thread, names, state) in seen.iter() {
        assert_eq!(thread.as_deref(), Some("lexmesh-ckpt"), "epoch {epoch}");
        assert_ne!(thread, &trainer_thread);
        assert_eq!(state.epochs_completed, *epoch);
        // The best weights are stored apart only when they are not this epoch's own.
        let has_best = names.contains(&"best.bpk".to_string());
        assert_eq!(
            has_best,
            state.best_epoch != *epoch,
            "epoch {epoch}: {names:?}"
        );
        for needed in ["model.bpk", "optimizer.bpk", "state.json"] {
            assert!(
                names.contains(&needed.to_string()),
                "epoch {epoch}: {names:?}"
            );
        }
    }
    // Only the latest checkpoint stays, and no partial write is left behind.
    assert_eq!(files(&root), vec!["epoch-0004", "latest"]);
    let dir = CheckpointDir::new(&root);
    assert_eq!(dir.latest_state().unwrap().unwrap().epochs_completed, 4);
}

#[test]
fn unchanged_best_weights_are_a_hard_link_not_a_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = CheckpointDir::new(tmp.path());
    let device = select_device(DeviceChoice::Cpu).unwrap();
    let config = ExperimentConfig::for_kind(ModelKind::Bow);
    let model = TextClassifier::new(&config.model, FEATURES, 2, 8, &device);
    let optimizer = burn::optim::AdamConfig::new().init();
    let state = |epoch: usize, best_epoch: usize| LoopState {
        fingerprint: "f".into(),
        epochs_completed: epoch,
        best_epoch,
        best_score: 0.5,
        best_loss: 1.0,
        epochs_without_improvement: epoch - best_epoch,
        history: Vec::new(),
        batches_done: 0,
        partial: Default::default(),
    };
    let first = dir.save(&state(1, 1), &model, &optimizer, &model).unwrap();
    assert!(
        !first.path.join("best.bpk").exists(),
        "best = model: no copy"
    );
    let model_inode = std::fs::metadata(first.path.join("model.bpk"))
        .unwrap()
        .ino();
    let second = dir.save(&state(2, 1), &model, &optimizer, &model).unwrap();
    let best_inode = std::fs::metadata(second.path.join("best.bpk"))
        .unwrap()
        .ino();
    assert_eq!(
        best_inode, model_inode,
        "epoch 1's weights linked, not rewritten"
    );
    let third = dir.save(&state(3, 1), &model, &optimizer, &model).unwrap();
    let again = std::fs::metadata(third.path.join("best.bpk"))
        .unwrap()
        .ino();
    assert_eq!(
        again, model_inode,
        "still the same file two checkpoints later"
    );
    assert!(
        !first.path.exists() && !second.path.exists(),
        "old checkpoints removed"
    );
    // A new best is stored from the module again.
    let fourth = dir.save(&state(4, 4), &model, &optimizer, &model).unwrap();
    assert!(!fourth.path.join("best.bpk").exists());
    assert!(fourth.bytes > 0);
}

#[test]
fn a_write_cut_short_leaves_the_previous_checkpoint_loadable() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ckpt");
    train(&run(&root, 2, false), &mut NullSink, &CancelToken::new()).unwrap();
    // A process killed while writing epoch 3 leaves a partial folder, never a pointer to it.
    let partial = root.join("epoch-0003.partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("model.bpk"), b"half a file").unwrap();
    let dir = CheckpointDir::new(&root);
    assert_eq!(dir.latest().unwrap().unwrap(), root.join("epoch-0002"));

    let mut sink = RecordingSink::default();
    let resumed = train(&run(&root, 4, true), &mut sink, &CancelToken::new());
    // A 4-epoch run resumed from a 2-epoch one: the fingerprint is the same, the loop state
    // says 2 epochs are done.
    let resumed = resumed.unwrap();
    let Some(ProgressEvent::Started(started)) = sink.0.first() else {
        panic!("no start event")
    };
    assert_eq!(
        started.start_epoch, 3,
        "resumed from the checkpoint's epoch"
    );
    let trained: Vec<usize> = sink
        .0
        .iter()
        .filter_map(|e| match e {
            ProgressEvent::Epoch(p) => Some(p.epoch),
            _ => None,
        })
        .collect();
    assert_eq!(trained, vec![3, 4], "only the remaining epochs ran");
    assert_eq!(resumed.history.len(), 4);
    assert!(
        !partial.exists(),
        "the next write cleared the partial folder"
    );
}

#[test]
fn a_run_cancelled_before_it_starts_trains_no_batch_and_keeps_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ckpt");
    let cancel = CancelToken::new();
    cancel.cancel();
    let mut sink = RecordingSink::default();
    let outcome = train(&run(&root, 4, false), &mut sink, &cancel).unwrap();
    assert_eq!(outcome.reason, lexmesh_trainer::StopReason::Cancelled);
    assert_eq!((outcome.best_epoch, outcome.history.len()), (0, 0));
    assert!(
        matches!(
            sink.0.as_slice(),
            [ProgressEvent::Started(_), ProgressEvent::Ended(_)]
        ),
        "a start and an end, no batch: {:?}",
        sink.0
    );
    assert!(!root.join("latest").exists(), "no checkpoint was written");
}

#[test]
fn a_resumed_run_ends_exactly_like_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = train(
        &run(&tmp.path().join("whole"), 4, false),
        &mut NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    let root = tmp.path().join("split");
    // Cancelled in epoch 3's first batch: the checkpoint of epoch 2 is the latest.
    let cancel = CancelToken::new();
    struct CancelIn3(CancelToken);
    impl lexmesh_trainer::ProgressSink for CancelIn3 {
        fn on_start(&mut self, _: &lexmesh_trainer::progress::TrainingStarted) {}
        fn on_batch(&mut self, e: &lexmesh_trainer::progress::BatchProgress) {
            if e.epoch == 3 {
                self.0.cancel();
            }
        }
        fn on_epoch(&mut self, _: &lexmesh_trainer::progress::EpochProgress) {}
        fn on_end(&mut self, _: &lexmesh_trainer::progress::TrainingEnded) {}
    }
    let first = train(
        &run(&root, 4, false),
        &mut CancelIn3(cancel.clone()),
        &cancel,
    )
    .unwrap();
    assert_eq!(first.history.len(), 2);
    let mut sink = RecordingSink::default();
    let second = train(&run(&root, 4, true), &mut sink, &CancelToken::new()).unwrap();
    let Some(ProgressEvent::Started(started)) = sink.0.first() else {
        panic!("no start event")
    };
    assert_eq!(started.start_epoch, 3);
    assert_eq!(second.history.len(), 4);
    for (a, b) in whole.history.iter().zip(&second.history) {
        assert_eq!(a.epoch, b.epoch);
        assert!(
            (a.loss - b.loss).abs() < 1e-9,
            "epoch {}: {a:?} vs {b:?}",
            a.epoch
        );
        assert!((a.validation_loss - b.validation_loss).abs() < 1e-9);
    }
    assert_eq!(whole.best_epoch, second.best_epoch);
}

/// Cancels the run at batch `batch` of epoch `epoch`, and keeps the last of the written
/// checkpoints' (epoch, batch).
struct CancelAt {
    cancel: CancelToken,
    epoch: usize,
    batch: usize,
}

impl lexmesh_trainer::ProgressSink for CancelAt {
    fn on_start(&mut self, _: &lexmesh_trainer::progress::TrainingStarted) {}
    fn on_batch(&mut self, e: &lexmesh_trainer::progress::BatchProgress) {
        if e.epoch == self.epoch && e.batch == self.batch {
            self.cancel.cancel();
        }
    }
    fn on_epoch(&mut self, _: &lexmesh_trainer::progress::EpochProgress) {}
    fn on_end(&mut self, _: &lexmesh_trainer::progress::TrainingEnded) {}
}

#[test]
fn a_run_stopped_mid_epoch_resumes_at_the_next_batch_and_ends_like_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    // Dropout on: the random draws of the resumed batches must be the uninterrupted run's.
    let with_dropout = |dir: &Path, resume: bool| {
        let mut r = run(dir, 3, resume);
        r.config.model.dropout = 0.3;
        r
    };
    let whole = train(
        &with_dropout(&tmp.path().join("whole"), false),
        &mut NullSink,
        &CancelToken::new(),
    )
    .unwrap();

    // A checkpoint after every batch (interval 0); stopped at batch 7 of epoch 2's 12.
    let root = tmp.path().join("split");
    let saved: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    let seen = saved.clone();
    let mut first_run = with_dropout(&root, false);
    first_run.checkpoint_interval = Some(std::time::Duration::ZERO);
    first_run.checkpoints = Some(CheckpointDir::new(&root).with_listener(Arc::new(
        move |s: &SavedCheckpoint| seen.lock().unwrap().push((s.epoch, s.batch)),
    )));
    let cancel = CancelToken::new();
    let mut sink = CancelAt {
        cancel: cancel.clone(),
        epoch: 2,
        batch: 7,
    };
    let first = train(&first_run, &mut sink, &cancel).unwrap();
    assert_eq!(first.history.len(), 1);
    let saved = saved.lock().unwrap().clone();
    // Every batch but an epoch's last gets one by time; the epoch's end gets its own.
    let expected: Vec<(usize, usize)> = (1..12)
        .map(|b| (0, b))
        .chain([(1, 0)])
        .chain((1..7).map(|b| (1, b)))
        .collect();
    assert_eq!(saved, expected);
    let state = CheckpointDir::new(&root).latest_state().unwrap().unwrap();
    assert_eq!((state.epochs_completed, state.batches_done), (1, 6));
    assert_eq!(state.partial.seen, 6 * 8);
    assert_eq!(files(&root), vec!["epoch-0001-batch-000006", "latest"]);

    // Resumed (no interval now): it starts at epoch 2's seventh batch, not at the epoch's
    // start, and ends exactly like the uninterrupted run.
    let mut sink = RecordingSink::default();
    let second = train(&with_dropout(&root, true), &mut sink, &CancelToken::new()).unwrap();
    let Some(ProgressEvent::Started(started)) = sink.0.first() else {
        panic!("no start event")
    };
    assert_eq!((started.start_epoch, started.start_batch), (2, 6));
    let first_batch = sink.0.iter().find_map(|e| match e {
        ProgressEvent::Batch(b) => Some((b.epoch, b.batch)),
        _ => None,
    });
    assert_eq!(first_batch, Some((2, 7)));
    assert_eq!(second.history.len(), 3);
    for (a, b) in whole.history.iter().zip(&second.history) {
        assert_eq!(a.epoch, b.epoch);
        assert!(
            (a.loss - b.loss).abs() < 1e-9,
            "epoch {}: {a:?} vs {b:?}",
            a.epoch
        );
        assert!((a.accuracy - b.accuracy).abs() < 1e-12);
        assert!((a.validation_loss - b.validation_loss).abs() < 1e-9);
    }
    assert_eq!(whole.best_epoch, second.best_epoch);
}
