"""pytest plugin for gpu_check.sh: keep only the tests that use the `release_fixture` fixture
(the release's float64 outputs and gradients), wherever they are.

    PYTHONPATH=benchmarks python -m pytest tests -p fixture_tests
"""


def pytest_collection_modifyitems(config, items):
    keep = [item for item in items if "release_fixture" in getattr(item, "fixturenames", ())]
    dropped = [item for item in items if "release_fixture" not in getattr(item, "fixturenames", ())]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep
