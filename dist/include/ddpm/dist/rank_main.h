// The frame every rank's main() shares (ddpm_train, ddpm_sample, ddpm_eval): one intra-op thread
// pool per rank sized to the host's cores, and an error path that reports "rank R on HOST: error:
// ..." and, when peers exist, aborts the whole job so no rank waits forever.
#pragma once
#include <functional>
#include <memory>

#include "ddpm/dist/communicator.h"
#include "ddpm/dist/context.h"

namespace ddpm::dist {

// cores / local ranks intra-op threads (at least 1), unless the user set OMP_NUM_THREADS.
void set_threads_per_rank(const Context& ctx);

// Returns body(comm)'s exit status. body makes the communicator into `comm` so the error path
// can abort it. On an exception: one line on stderr and status 1 for a single rank; with peers,
// abort_job (NCCL abort, then MPI_Abort) with that line.
int run_rank_main(const Context& ctx, const std::function<int(std::unique_ptr<Communicator>& comm)>& body);

}  // namespace ddpm::dist
