"""The benchmark harness that `inik-fast bench` and the pytest-benchmark suites in benchmarks/
share: the workloads (workloads.py), the interleaved measurement (measure.py) and the machine's
description (machine.py); command.py is `inik-fast bench` itself."""
