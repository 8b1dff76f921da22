"""The whole model, every available backend beside the release's computation (backend "release"):
eval forward and the training step, float32 and bf16 autocast; each backend's rounds alternate
with the release's (record.run)."""
import record


def test_model_eval(benchmark, case):
    record.run(benchmark, case)


def test_train_step(benchmark, case):
    record.run(benchmark, case)
