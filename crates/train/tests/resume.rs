//! Resuming an interrupted run ends with bit-identical weights. In its own test
//! binary: dropout draws from the backend's process-wide generator, which other
//! tests running in parallel threads would reseed.

mod common;

use common::*;
use tp06_train::{Config, metrics};
use tp06_train::trainer::Trainer;

#[test]
fn an_interrupted_run_resumes_to_identical_weights() {
    let c = Config { checkpoint_every: 3, max_steps: Some(7), ..config() };
    let train = examples("masked");
    // Uninterrupted, with dropout on so that the masks must repeat too.
    let (model, gpt) = load("masked", true);
    let mut straight = Trainer::new(model.clone(), course_plan(&gpt), adamw(&c), 1.0, c.seed, Default::default());
    let dir_a = tempfile::tempdir().unwrap();
    run_loop(&mut straight, &train, &c, dir_a.path(), 7, false, &mut new_state()).unwrap();

    // Interrupted after its first step (the stop flag is already set), then resumed.
    let dir_b = tempfile::tempdir().unwrap();
    let mut first = Trainer::new(model, course_plan(&gpt), adamw(&c), 1.0, c.seed, Default::default());
    let err = run_loop(&mut first, &train, &c, dir_b.path(), 7, true, &mut new_state()).unwrap_err();
    assert!(matches!(err, tp06_train::TrainError::Interrupted { step: 1, .. }), "{err}");
    let checkpoints = tp06_train::checkpoint::list(&dir_b.path().join("checkpoints")).unwrap();
    let last = checkpoints.last().unwrap();
    assert_eq!(last.state.step, 1);
    let (model, moments) = tp06_train::checkpoint::load::<B>(last, &gpt, &Default::default()).unwrap();
    let mut resumed = Trainer::new(model, course_plan(&gpt), adamw(&c), 1.0, c.seed, Default::default());
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
