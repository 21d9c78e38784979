// ddpm_inspect schedule | losses: print a beta schedule with its derived arrays as CSV, and compute
// the training losses of given (x_start, noise, t, model_output) tensors from an HDF5 file, so users
// can compare ddpm with other implementations number by number. Computation is in float64.
#include <ATen/ATen.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "ddpm/data/h5_tensor.h"
#include "ddpm/model/diffusion/gaussian_diffusion.h"
#include "ddpm/model/diffusion/respace.h"
#include "ddpm/model/diffusion/schedule.h"
#include "inspect/commands.h"

namespace ddpm::inspect {

namespace {
namespace df = ddpm::diffusion;

struct ScheduleArgs {
  std::string schedule = "linear";
  int64_t steps = 0;
  std::string respacing;
};

struct LossesArgs {
  std::string input, output;
  ScheduleArgs schedule;
  std::string mean_type = "eps", var_type = "fixed-large", loss_type = "mse";
};

std::vector<double> betas_for(const ScheduleArgs& a) {
  if (a.steps <= 0 && a.schedule.rfind("file:", 0) != 0) {
    throw std::invalid_argument("--steps is required (>= 2) for schedule '" + a.schedule + "'");
  }
  std::vector<double> betas = df::get_named_beta_schedule(a.schedule, a.steps);
  if (!a.respacing.empty()) {
    betas = df::respaced_betas(betas, df::space_timesteps(static_cast<int64_t>(betas.size()), a.respacing));
  }
  return betas;
}

void run_schedule(const ScheduleArgs& a) {
  const df::ScheduleArrays s = df::make_schedule_arrays(betas_for(a));
  std::printf("t,beta,alphas_cumprod,alphas_cumprod_prev,posterior_variance,posterior_log_variance_clipped,"
              "posterior_mean_coef1,posterior_mean_coef2\n");
  const std::vector<at::Tensor> cols = {s.betas, s.alphas_cumprod, s.alphas_cumprod_prev, s.posterior_variance,
                                        s.posterior_log_variance_clipped, s.posterior_mean_coef1,
                                        s.posterior_mean_coef2};
  for (int64_t i = 0; i < s.betas.size(0); ++i) {
    std::printf("%lld", static_cast<long long>(i));
    for (const at::Tensor& c : cols) std::printf(",%.17g", c.data_ptr<double>()[i]);
    std::printf("\n");
  }
}

std::string shape_str(at::IntArrayRef s) { return c10::str(s); }

// Reads `name` as float64 (from float32 or float64) or, when `integer`, as int64; checks the shape
// where `expected` is given (-1 matches any size).
at::Tensor read_input(const data::H5TensorFile& f, const std::string& name, bool integer,
                      const std::vector<int64_t>& expected, const std::string& why) {
  if (!f.has(name)) {
    throw std::invalid_argument(f.path() + ": dataset '" + name + "' is missing; expected " +
                                (integer ? "int64 " : "float32 ") + why);
  }
  at::Tensor x = f.read(name);
  const bool ok_type = integer ? x.scalar_type() == at::kLong
                               : (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble);
  if (!ok_type) {
    throw std::invalid_argument(f.path() + ": dataset '" + name + "' has type " + c10::toString(x.scalar_type()) +
                                ", expected " + (integer ? "int64" : "float32 (or float64)"));
  }
  bool ok_shape = x.dim() == static_cast<int64_t>(expected.size());
  for (size_t d = 0; ok_shape && d < expected.size(); ++d) ok_shape = expected[d] < 0 || expected[d] == x.size(d);
  if (!ok_shape) {
    throw std::invalid_argument(f.path() + ": dataset '" + name + "' has shape " + shape_str(x.sizes()) +
                                ", expected " + shape_str(expected) + " (" + why + ")");
  }
  return integer ? x : x.to(at::kDouble);
}

void run_losses(const LossesArgs& a) {
  const df::GaussianDiffusion diffusion(betas_for(a.schedule), df::parse_mean_type(a.mean_type),
                                        df::parse_var_type(a.var_type), df::parse_loss_type(a.loss_type));
  const data::H5TensorFile in = data::H5TensorFile::open_read(a.input);
  const at::Tensor x_start = read_input(in, "x_start", false, {-1, -1, -1, -1}, "(N, C, H, W)");  // (N, C, H, W)
  const auto xs = x_start.sizes().vec();
  const at::Tensor noise = read_input(in, "noise", false, xs, "the shape of x_start");
  const at::Tensor t = read_input(in, "t", true, {xs[0]}, "one timestep per sample of x_start");  // (N)
  const int64_t T = diffusion.num_timesteps();
  if (t.numel() > 0 && (t.min().item<int64_t>() < 0 || t.max().item<int64_t>() >= T)) {
    throw std::invalid_argument(in.path() + ": dataset 't' has values in [" + std::to_string(t.min().item<int64_t>()) +
                                ", " + std::to_string(t.max().item<int64_t>()) + "], expected [0, " +
                                std::to_string(T - 1) + "] for " + std::to_string(T) + " steps");
  }
  std::vector<int64_t> out_shape = xs;
  if (df::is_learned(diffusion.var_type())) out_shape[1] *= 2;
  const at::Tensor model_output = read_input(
      in, "model_output", false, out_shape,
      df::is_learned(diffusion.var_type()) ? "2C channels: mean part then variance part, for var type " + a.var_type
                                           : "C channels, for var type " + a.var_type);

  const at::Tensor x_t = diffusion.q_sample(x_start, t, noise);  // (N, C, H, W)
  const df::LossTerms terms = diffusion.training_losses_from_output(model_output, x_start, x_t, t, noise);
  const df::PMeanVariance p = diffusion.p_mean_variance_from_output(model_output, x_t, t, /*clip_denoised=*/false);
  data::H5TensorFile out = data::H5TensorFile::create(a.output);
  out.write("loss", terms.loss.contiguous());
  if (terms.mse.defined()) out.write("mse", terms.mse.contiguous());
  if (terms.vb.defined()) out.write("vb", terms.vb.contiguous());
  out.write("model_mean", p.mean.contiguous());
  out.write("model_log_variance", p.log_variance.contiguous());
  out.write("x_t", x_t.contiguous());
}

void add_schedule_options(CLI::App* cmd, ScheduleArgs& s) {
  cmd->add_option("--schedule", s.schedule, "beta schedule: " + df::known_schedule_names())->capture_default_str();
  cmd->add_option("--steps", s.steps, "number of diffusion steps T (a file: schedule may leave it out)");
  cmd->add_option("--respace", s.respacing, "keep only these steps: \"N\", \"a,b,c\" (per section) or \"ddimN\"");
}
}  // namespace

void add_diffusion_commands(CLI::App& app) {
  auto sched = std::make_shared<ScheduleArgs>();
  CLI::App* s = app.add_subcommand("schedule", "print a beta schedule and its derived arrays as CSV (%.17g)");
  add_schedule_options(s, *sched);
  s->callback([sched] { run_schedule(*sched); });

  auto loss = std::make_shared<LossesArgs>();
  CLI::App* l = app.add_subcommand(
      "losses",
      "compute training losses in float64 from IN.h5 (float32 x_start, noise (N,C,H,W), int64 t (N), float32 "
      "model_output (N,C or 2C,H,W)); writes loss, mse, vb (where defined), model_mean, model_log_variance, x_t");
  l->add_option("--input", loss->input, "input HDF5 file")->required();
  l->add_option("--output", loss->output, "output HDF5 file (overwritten)")->required();
  add_schedule_options(l, loss->schedule);
  l->add_option("--mean-type", loss->mean_type, "eps|x0|prev|v")->capture_default_str();
  l->add_option("--var-type", loss->var_type, "fixed-small|fixed-large|learned|learned-range")->capture_default_str();
  l->add_option("--loss-type", loss->loss_type, "mse|rescaled-mse|kl|rescaled-kl")->capture_default_str();
  l->callback([loss] { run_losses(*loss); });
}

}  // namespace ddpm::inspect
