// ddpm_train: trains a diffusion model on an HDF5 dataset, one process per rank under mpirun or
// srun (a plain run is one rank). Exit status: 0 the run reached its bound; 75 stopped by
// SIGTERM/SIGUSR1 after writing a checkpoint (requeue: the same command resumes); 1 an error.
// Built again as ddpm_train_<task> with DDPM_TRAIN_TASK (launch/CMakeLists.txt): the same program
// whose --task is fixed (ddpm_train_classifier: the noise classifier of classifier guidance;
// ddpm_train_autoencoder: latent diffusion's autoencoder).
#include <torch/torch.h>

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <stdexcept>

#include "ddpm/dist/check.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/dist/context.h"
#include "ddpm/dist/rank_main.h"
#include "ddpm/trainer/config.h"
#include "ddpm/trainer/host_memory.h"
#include "ddpm/trainer/signals.h"
#include "ddpm/trainer/train_loop.h"

namespace {

// This build's name, --help line and defaults: ddpm_train, or ddpm_train_<task> for one task.
ddpm::trainer::CliProgram this_program() {
  ddpm::trainer::CliProgram p;
#ifdef DDPM_TRAIN_TASK
  p.name = std::string("ddpm_train_") + DDPM_TRAIN_TASK;
  const std::string task = DDPM_TRAIN_TASK;
  const std::string what = task == "classifier" ? "trains the noise-conditional classifier of classifier guidance (the "
                                                  "encoder half of --model, --num-classes logits) on noisy images x_t "
                                                  "of a labelled dataset"
                               : task == "autoencoder" ? "trains latent diffusion's KL autoencoder (reconstruction + "
                                                         "kl_weight KL) whose latents ddpm_train --latent diffuses"
                                                       : "trains --task " + task;
  p.about = what + "; ddpm_train with --task " + task +
            " fixed (the same flags, loop, checkpoints and resume); run it with mpirun -np N.";
  p.defaults = ddpm::trainer::Json{{"task", DDPM_TRAIN_TASK}};
#endif
  return p;
}

const char* kExitCodes =
    "\nExit status:\n"
    "  0   the run reached --max-steps / --max-images (final checkpoint written)\n"
    "  75  stopped by SIGTERM or SIGUSR1 after a checkpoint (EX_TEMPFAIL): requeue the job and run\n"
    "      the same command; --resume auto continues from the checkpoint\n"
    "  1   an error (printed as \"rank R on HOST: error: ...\"; the whole job is aborted)\n";

}  // namespace

int main(int argc, char** argv) {
  // A file-size limit (ulimit -f) must fail the write (EFBIG: the checkpoint error names the path
  // and keeps the previous checkpoint) instead of killing the rank with SIGXFSZ.
  std::signal(SIGXFSZ, SIG_IGN);
  // Freed tensor memory stays in the process for the next step instead of being mapped afresh
  // (page faults on every activation, every step; see host_memory.h).
  ddpm::trainer::retain_freed_host_memory();
  // SIGTERM/SIGUSR1 are caught from the first instruction: one that arrives while MPI, the data
  // and the model are being set up stops the run after its first step with a checkpoint and exit
  // 75, instead of killing the rank with nothing saved.
  ddpm::trainer::StopSignalHandlers stop_handlers;
  ddpm::dist::MpiRuntime mpi(&argc, &argv);
  const ddpm::dist::Context& ctx = mpi.context();
  return ddpm::dist::run_rank_main(ctx, [&](std::unique_ptr<ddpm::dist::Communicator>& comm) {
    const ddpm::trainer::CliProgram program = this_program();
    const ddpm::trainer::CliResult cli = ddpm::trainer::parse_train_args(argc, argv, program);
    if (!cli.config) {
      if (ctx.rank == 0) std::cout << cli.help << kExitCodes;
      return 0;
    }
    const ddpm::trainer::TrainConfig& config = *cli.config;
    if (program.defaults.contains("task") && config.task != program.defaults.at("task").get<std::string>()) {
      throw std::invalid_argument("--task " + config.task + ": " + program.name + " trains --task " +
                                  program.defaults.at("task").get<std::string>() + "; use ddpm_train for --task " +
                                  config.task);
    }
    ddpm::dist::set_threads_per_rank(ctx);
    comm = ddpm::dist::make_communicator(ctx);
    // A rank stuck in a collective (a peer hung or died) ends the whole job instead of waiting
    // forever: abort the communicator (NCCL), then MPI_Abort, from the watchdog's thread.
    comm->set_collective_timeout(config.collective_timeout, [&comm](const std::string& message) {
      ddpm::dist::abort_job(message, comm.get(), 1);
    });
    if (ctx.rank == 0) {
      std::cout << program.name << " " << DDPM_VERSION << " (torch " << DDPM_TORCH_VERSION << "), " << ctx.world_size
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
