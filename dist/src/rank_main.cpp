// The frame of every rank's main(); see ddpm/dist/rank_main.h.
#include "ddpm/dist/rank_main.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <thread>

#include "ddpm/dist/check.h"

namespace ddpm::dist {

void set_threads_per_rank(const Context& ctx) {
  if (std::getenv("OMP_NUM_THREADS")) return;
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  at::set_num_threads(std::max(1, cores / std::max(1, ctx.local_size)));
}

int run_rank_main(const Context& ctx, const std::function<int(std::unique_ptr<Communicator>& comm)>& body) {
  std::unique_ptr<Communicator> comm;
  try {
    return body(comm);
  } catch (const std::exception& e) {
    const std::string why = "rank " + std::to_string(ctx.rank) + " on " + ctx.host + ": error: " + e.what();
    if (ctx.world_size == 1) {
      std::cerr << why << std::endl;
      return 1;
    }
    abort_job(why, comm.get(), 1);  // ends every rank: no peer waits forever
  }
}

}  // namespace ddpm::dist
