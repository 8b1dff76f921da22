// Dynamic scheduling on top of at::parallel_for: each thread makes its own state once, then
// takes work items from a shared counter until none are left. Unlike a static split this keeps
// both cores busy when items differ in cost or a core is shared with another process. Results
// must not depend on which thread runs an item (the kernels give every item its own output).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace inik_fast::cpu {

// run(state, item) for item in [0, n), with state = make() built once per thread.
template <class Make, class Run>
void parallel_items(int64_t n, Make&& make, Run&& run) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(n, at::get_num_threads());
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    if (begin >= end) return;
    auto state = make();
    for (int64_t i = next++; i < n; i = next++) run(state, i);
  });
}

}  // namespace inik_fast::cpu
