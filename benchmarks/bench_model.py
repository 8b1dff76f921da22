"""The whole model, every available backend beside the release's computation (backend "release"):
eval forward and the training step, float32 and bf16 autocast, and eval of the model cast to bf16
(as `deblur --precision bf16`); each backend's rounds alternate with the release's (record.run)."""
import record


def test_model_eval(benchmark, case):
    record.run(benchmark, case)


def test_model_eval_cast(benchmark, case):
    record.run(benchmark, case)


def test_train_step(benchmark, case):
    record.run(benchmark, case)
