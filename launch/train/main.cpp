// ddpm_train: trains a diffusion model on an HDF5 dataset, one process per rank under mpirun or
// srun (a plain run is one rank). Exit status: 0 the run reached its bound; 75 stopped by
// SIGTERM/SIGUSR1 after writing a checkpoint (requeue: the same command resumes); 1 an error.
// Built a second time as ddpm_train_autoencoder with DDPM_TRAIN_TASK="autoencoder": the same
// program with --task given (latent diffusion's autoencoder).
#include <torch/torch.h>

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "ddpm/dist/check.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/dist/context.h"
#include "ddpm/dist/rank_main.h"
#include "ddpm/trainer/config.h"
#include "ddpm/trainer/signals.h"
#include "ddpm/trainer/train_loop.h"

namespace {

const char* kExitCodes =
    "\nExit status:\n"
    "  0   the run reached --max-steps / --max-images (final checkpoint written)\n"
    "  75  stopped by SIGTERM or SIGUSR1 after a checkpoint (EX_TEMPFAIL): requeue the job and run\n"
    "      the same command; --resume auto continues from the checkpoint\n"
    "  1   an error (printed as \"rank R on HOST: error: ...\"; the whole job is aborted)\n";

// argv with `--task DDPM_TRAIN_TASK` after the program name when the binary is built for one task.
std::vector<const char*> train_args(int argc, char** argv) {
  std::vector<const char*> args(argv, argv + argc);
#ifdef DDPM_TRAIN_TASK
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--task" || arg.rfind("--task=", 0) == 0) {
      throw std::invalid_argument(std::string(argv[0]) + " trains --task " + DDPM_TRAIN_TASK +
                                  "; drop --task (ddpm_train --task X trains another task)");
    }
  }
  args.insert(args.begin() + 1, {"--task", DDPM_TRAIN_TASK});
#endif
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  // A file-size limit (ulimit -f) must fail the write (EFBIG: the checkpoint error names the path
  // and keeps the previous checkpoint) instead of killing the rank with SIGXFSZ.
  std::signal(SIGXFSZ, SIG_IGN);
  // SIGTERM/SIGUSR1 are caught from the first instruction: one that arrives while MPI, the data
  // and the model are being set up stops the run after its first step with a checkpoint and exit
  // 75, instead of killing the rank with nothing saved.
  ddpm::trainer::StopSignalHandlers stop_handlers;
  ddpm::dist::MpiRuntime mpi(&argc, &argv);
  const ddpm::dist::Context& ctx = mpi.context();
  return ddpm::dist::run_rank_main(ctx, [&](std::unique_ptr<ddpm::dist::Communicator>& comm) {
    const std::vector<const char*> args = train_args(argc, argv);
    const ddpm::trainer::CliResult cli = ddpm::trainer::parse_train_args(static_cast<int>(args.size()), args.data());
    if (!cli.config) {
#ifdef DDPM_TRAIN_TASK
      if (ctx.rank == 0) std::cout << argv[0] << " is ddpm_train with --task " << DDPM_TRAIN_TASK << ".\n";
#endif
      if (ctx.rank == 0) std::cout << cli.help << kExitCodes;
      return 0;
    }
    const ddpm::trainer::TrainConfig& config = *cli.config;
    ddpm::dist::set_threads_per_rank(ctx);
    comm = ddpm::dist::make_communicator(ctx);
    // A rank stuck in a collective (a peer hung or died) ends the whole job instead of waiting
    // forever: abort the communicator (NCCL), then MPI_Abort, from the watchdog's thread.
    comm->set_collective_timeout(config.collective_timeout, [&comm](const std::string& message) {
      ddpm::dist::abort_job(message, comm.get(), 1);
    });
    if (ctx.rank == 0) {
      std::cout << "ddpm_train " << DDPM_VERSION << " (torch " << DDPM_TORCH_VERSION << "), " << ctx.world_size
                << " rank(s), backend " << comm->backend() << ", " << at::get_num_threads()
                << " thread(s) per rank, device " << ctx.device() << "\nconfiguration:\n"
                << ddpm::trainer::to_json(config).dump(2) << std::endl;
    }
    ddpm::trainer::TrainHooks hooks;
    hooks.install_signal_handlers = false;  // installed above, before MPI
    const ddpm::trainer::TrainOutcome out = ddpm::trainer::train(config, *comm, ctx.device(), hooks);
    if (ctx.rank == 0) {
      std::cout << (out.exit_code == 0 ? "done" : "stopped") << " at step " << out.step << " ("
                << out.images_seen << " images); checkpoint " << out.checkpoint << "; exit status "
                << out.exit_code << std::endl;
    }
    comm.reset();
    return out.exit_code;
  });
}
