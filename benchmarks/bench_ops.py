"""The two ops, every available backend beside the release's computation (one group per size);
the workloads are inik_fast.benchmarking.workloads', each backend's rounds alternate with the
release's (record.run)."""
import record


def test_ikconv_forward(benchmark, case):
    record.run(benchmark, case)


def test_ikconv_train(benchmark, case):
    record.run(benchmark, case)


def test_ikconv_train_dx(benchmark, case):
    record.run(benchmark, case)


def test_atom_bank(benchmark, case):
    record.run(benchmark, case)
