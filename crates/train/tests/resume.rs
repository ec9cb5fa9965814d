//! Resuming an interrupted run ends with bit-identical weights. In its own test
//! binary: dropout draws from the backend's process-wide generator, which other
//! tests running in parallel threads would reseed.

mod common;

use common::*;
use tp06_train::trainer::{Trainer, TrainerSettings};
use tp06_train::{Config, metrics};

#[test]
fn an_interrupted_run_resumes_to_identical_weights() {
    let c = Config { checkpoint_every: 3, max_steps: Some(7), ..config() };
    let train = examples("masked");
    // Uninterrupted, with dropout on so that the masks must repeat too.
    let (model, gpt) = load("masked", true);
    let mut straight = Trainer::new(
        model.clone(),
        course_plan(&gpt),
        TrainerSettings { max_grad_norm: 1.0, ..TrainerSettings::of(&c) },
        Default::default(),
    );
    let dir_a = tempfile::tempdir().unwrap();
    run_loop(&mut straight, &train, &c, dir_a.path(), 7, false, &mut new_state()).unwrap();

    // Interrupted after its first step (the stop flag is already set), then resumed.
    let dir_b = tempfile::tempdir().unwrap();
    let mut first = Trainer::new(
        model,
        course_plan(&gpt),
        TrainerSettings { max_grad_norm: 1.0, ..TrainerSettings::of(&c) },
        Default::default(),
    );
    let err = run_loop(&mut first, &train, &c, dir_b.path(), 7, true, &mut new_state()).unwrap_err();
    assert!(matches!(err, tp06_train::TrainError::Interrupted { step: 1, .. }), "{err}");
    // Without the stage around it, the message names no command to resume with.
    assert!(err.to_string().ends_with("run the same command again to continue"), "{err}");
    let checkpoints = tp06_train::checkpoint::list(&dir_b.path().join("checkpoints")).unwrap();
    let last = checkpoints.last().unwrap();
    assert_eq!(last.state.step, 1);
    let (model, moments) = tp06_train::checkpoint::load::<B>(last, &gpt, &first.model, &Default::default()).unwrap();
    let mut resumed = Trainer::new(
        model,
        course_plan(&gpt),
        TrainerSettings { max_grad_norm: 1.0, ..TrainerSettings::of(&c) },
        Default::default(),
    );
    resumed.moments = moments;
    resumed.step = last.state.step;
    let mut state = last.state.clone();
    metrics::truncate_after(&dir_b.path().join("metrics.jsonl"), 1).unwrap();
    run_loop(&mut resumed, &train, &c, dir_b.path(), 7, false, &mut state).unwrap();

    assert_eq!(values(&straight.model), values(&resumed.model), "bit-identical after resume");
    let a = metrics::read(&dir_a.path().join("metrics.jsonl")).unwrap();
    let b = metrics::read(&dir_b.path().join("metrics.jsonl")).unwrap();
    let losses = |r: &[metrics::Record]| r.iter().map(|x| (x.step, x.loss)).collect::<Vec<_>>();
    assert_eq!(losses(&a), losses(&b), "the metrics log continues without gaps or repeats");
    assert!(dir_b.path().join("checkpoints").read_dir().unwrap().count() <= c.keep_checkpoints);
}

/// Only the new `wte` rows train: their moments alone are checkpointed, and a
/// checkpoint whose `wte` moments cover every row (as written before) resumes
/// to the same weights too. No dropout: this test shares its binary.
#[test]
fn a_run_training_new_rows_resumes_to_identical_weights_from_either_moments_layout() {
    let c = Config { checkpoint_every: 3, max_steps: Some(5), ..config() };
    let (model, plan, train, gpt) = grown_with_new_rows();
    let grown = tp06_model::Gpt2Config { vocab_size: gpt.vocab_size + 4, ..gpt.clone() };
    let mut straight = Trainer::new(
        model.clone(),
        plan.clone(),
        TrainerSettings { max_grad_norm: 1.0, ..TrainerSettings::of(&c) },
        Default::default(),
    );
    let dir_a = tempfile::tempdir().unwrap();
    run_loop(&mut straight, &train, &c, dir_a.path(), 5, false, &mut new_state()).unwrap();

    let dir_b = tempfile::tempdir().unwrap();
    let mut first = Trainer::new(
        model,
        plan.clone(),
        TrainerSettings { max_grad_norm: 1.0, ..TrainerSettings::of(&c) },
        Default::default(),
    );
    run_loop(&mut first, &train, &c, dir_b.path(), 5, true, &mut new_state()).unwrap_err();
    let last = tp06_train::checkpoint::list(&dir_b.path().join("checkpoints")).unwrap().pop().unwrap();
    let (_, moments) = tp06_train::checkpoint::load::<B>(&last, &grown, &first.model, &Default::default()).unwrap();
    let span = 4 * gpt.n_embd;
    assert_eq!(moments["wte.weight"].m.dims(), [span], "only the new rows' moments are kept");

    for full_width in [false, true] {
        let (model, mut moments) =
            tp06_train::checkpoint::load::<B>(&last, &grown, &first.model, &Default::default()).unwrap();
        if full_width {
            let wte = moments.get_mut("wte.weight").unwrap();
            for t in [&mut wte.m, &mut wte.v] {
                let zeros = burn::tensor::Tensor::zeros([gpt.vocab_size * gpt.n_embd], &t.device());
                *t = burn::tensor::Tensor::cat(vec![zeros, t.clone()], 0);
            }
        }
        let mut resumed = Trainer::new(
            model,
            plan.clone(),
            TrainerSettings { max_grad_norm: 1.0, ..TrainerSettings::of(&c) },
            Default::default(),
        );
        resumed.moments = moments;
        resumed.step = last.state.step;
        let mut state = last.state.clone();
        let dir_c = tempfile::tempdir().unwrap();
        run_loop(&mut resumed, &train, &c, dir_c.path(), 5, false, &mut state).unwrap();
        assert_eq!(
            values(&straight.model),
            values(&resumed.model),
            "bit-identical after resume (full-width moments: {full_width})"
        );
    }
}

/// A step asked to stop between two micro-batches is given up whole: the
/// model, the moments and the step count stay as they were, and the same
/// step taken afterwards is the step an unstopped trainer takes.
#[test]
fn a_step_stopped_between_micro_batches_changes_nothing() {
    let c = config();
    let train = examples("masked");
    let (model, gpt) = load("masked", false);
    let micro: Vec<Vec<&tp06_train::examples::Example>> =
        train.iter().take(4).collect::<Vec<_>>().chunks(2).map(|c| c.to_vec()).collect();
    let mut stopped = Trainer::new(model.clone(), course_plan(&gpt), TrainerSettings::of(&c), Default::default());
    let before = values(&stopped.model);
    let stop = std::sync::atomic::AtomicBool::new(true);
    let err = stopped.step_unless(&micro, 1e-3, &stop).unwrap_err();
    assert_eq!(err, tp06_train::trainer::StepError::Stopped);
    assert_eq!((stopped.step, stopped.moments.len()), (0, 0));
    assert_eq!(values(&stopped.model), before, "no parameter moved");
    let mut plain = Trainer::new(model, course_plan(&gpt), TrainerSettings::of(&c), Default::default());
    let (a, b) = (stopped.step(&micro, 1e-3).unwrap(), plain.step(&micro, 1e-3).unwrap());
    assert_eq!(a, b);
    assert_eq!(values(&stopped.model), values(&plain.model));
}
