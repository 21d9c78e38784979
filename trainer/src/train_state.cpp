// The training loop's state: checkpoint save (every rank's RNG gathered, rank 0 writes), resume
// (config check, the task's network and state, EMA, optimizer, data cursor, counters, RNG),
// per-rank seeding.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <stdexcept>

#include "ddpm/dist/module_sync.h"
#include "ddpm/model/unet/state_dict.h"
#include "ddpm/trainer/rng_state.h"
#include "trainer.h"

namespace ddpm::trainer::detail {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

// Each rank draws its own noise, timesteps and dropout: the generators are seeded from
// (seed, rank, step) (step > 0 only when a resume cannot restore the saved states).
void Trainer::seed_rank(int64_t step) {
  const uint64_t s = splitmix64(splitmix64(splitmix64(static_cast<uint64_t>(config_.seed)) ^
                                           static_cast<uint64_t>(rank_ + 1)) ^ static_cast<uint64_t>(step));
  torch::manual_seed(s >> 1);
}

at::Tensor Trainer::to_comm(const at::Tensor& t) const {
  return t.to(comm_.device()).contiguous();
}

// --- resume -----------------------------------------------------------------------------------

void Trainer::resume_or_init() {
  CheckpointStore::Resumed r = store_->resume(config_.resume);
  for (const auto& w : r.warnings) print("warning: " + w);
  if (r.state) {
    restore(*r.state, r.path);
    return;
  }
  if (!config_.init_from.empty()) {
    task_->load_initial_weights(config_.init_from);
    print("initial weights from " + config_.init_from);
  }
  dist::broadcast_module(comm_, task_->network());
  ema_ = std::make_unique<EmaSet>(config_.ema_rates, config_.ema_warmup, params_);
  if (const std::string note = task_->start(comm_); !note.empty()) print(note);
  seed_rank(0);
}

void Trainer::restore(const TrainState& s, const std::string& path) {
  check_resume_config(s.config, to_json(config_), path + "/state.json");
  model::load_state_dict(task_->network(), s.model, path + "/model.pt");
  dist::broadcast_module(comm_, task_->network());
  ema_ = std::make_unique<EmaSet>(config_.ema_rates, config_.ema_warmup, params_);
  for (size_t i = 0; i < config_.ema_rates.size(); ++i) {
    const double rate = config_.ema_rates[i];
    const model::TensorDict* saved = nullptr;
    for (const auto& [r, dict] : s.emas) {
      if (r == rate) saved = &dict;
    }
    if (!saved) throw CheckpointError(path + ": no EMA for rate " + EmaSet::rate_name(rate));
    ema_->load_state(i, *saved, path + "/" + ema_file_name(rate));
  }
  optimizer_->restore(s, path);
  task_->load_state(s.sampler);
  if (s.data_cursor.size() < 2) throw CheckpointError(path + ": state.pt has no data cursor (epoch, position)");
  batches_->set_cursor(data::Cursor{s.data_cursor[0], s.data_cursor[1]});
  step_ = s.step;
  images_seen_ = s.images_seen;
  resumed_from_ = s.step;
  last_checkpoint_ = path;

  std::string rng_note = "RNG restored";
  if (s.world_size == world_ && static_cast<int>(s.rng.size()) == world_) {
    try {
      restore_rng_state(s.rng.at(rank_));
    } catch (const std::invalid_argument& e) {
      seed_rank(step_);
      rng_note = std::string("warning: RNG reseeded from (seed, rank, step): ") + e.what();
    }
  } else {
    seed_rank(step_);
    rng_note = "warning: the checkpoint was written by " + std::to_string(s.world_size) + " ranks, this run has " +
               std::to_string(world_) + ": RNG reseeded from (seed, rank, step), data cursor re-sharded (global "
               "batch " + std::to_string(plan_.global_batch) + " kept); the run continues but not bit-exactly";
  }
  print("resumed from " + path + " at step " + std::to_string(step_) + " (epoch " +
        std::to_string(s.data_cursor[0]) + ", position " + std::to_string(s.data_cursor[1]) + "); " + rng_note);
}

// --- checkpoints --------------------------------------------------------------------------------

std::vector<RngState> Trainer::gather_rng_states() {
  const RngState mine = capture_rng_state();
  std::vector<RngState> all(world_);
  const at::Tensor cpu = comm_.all_gather(to_comm(mine.cpu)).cpu();  // (W, B) uint8
  for (int r = 0; r < world_; ++r) all[r].cpu = cpu[r].clone();
  for (const at::Tensor& dev : mine.cuda) {
    const at::Tensor g = comm_.all_gather(to_comm(dev)).cpu();
    for (int r = 0; r < world_; ++r) all[r].cuda.push_back(g[r].clone());
  }
  return all;
}

void Trainer::save_checkpoint() {
  const auto t0 = StepTimer::Clock::now();
  std::vector<RngState> rng = gather_rng_states();  // collective: every rank
  if (rank_ == 0) {
    TrainState s;
    s.step = step_;
    s.images_seen = images_seen_;
    s.world_size = world_;
    s.model = model::state_dict(task_->network());
    for (size_t i = 0; i < ema_->rates().size(); ++i) s.emas.emplace_back(ema_->rates()[i], ema_->state(i));
    optimizer_->save(s);
    s.sampler = task_->state();
    const data::Cursor c = batches_->cursor();
    s.data_cursor = {c.epoch, c.position};
    s.rng = std::move(rng);
    s.config = to_json(config_);
    s.extra["global_batch"] = plan_.global_batch;
    const std::string path = store_->save(s);
    const double seconds = seconds_since(t0);
    if (logger_.metrics()) logger_.metrics()->set_checkpoint(unix_now(), seconds);
    print("checkpoint " + path + " (" + format_number("%.2f", seconds) + " s)");
  }
  comm_.barrier();  // the checkpoint is complete before any rank goes on (or exits)
  last_checkpoint_ = store_->path_for(step_);
}

}  // namespace ddpm::trainer::detail
