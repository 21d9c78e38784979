// ddpm_sample and ddpm_eval on a tiny checkpoint built here (tiny U-Net, 8x8 grey, T = 20):
// EMA selection and errors, classifier-free guidance against direct network calls, the .npz
// (read back by data::read_npz and numpy) identical on 1 and 2 ranks for every sampler, and
// bits/dim (the T-step bound; the probability-flow ODE's) equal to a direct single-process
// calc_bpd_loop / ode_log_likelihood on 1 and 2 ranks.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "ddpm/data/convert.h"
#include "ddpm/data/dataset.h"
#include "ddpm/data/images.h"
#include "ddpm/data/npy.h"
#include "ddpm/model/diffusion/ode_likelihood.h"
#include "ddpm/model/unet/state_dict.h"
#include "ddpm/trainer/checkpoint.h"
#include "ddpm/trainer/factory.h"
#include "ddpm/trainer/inference.h"
#include "testing/testing.h"

namespace ddpm::trainer {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kImages = 6, kClasses = 3;

using ddpm::testing::bin;
using ddpm::testing::mpirun;  // the OpenMPI settings come from the test's environment

using ddpm::testing::read_text;

int run(const std::string& cmd, const std::string& log) { return ddpm::testing::run_command(cmd, log, /*cpu_only=*/true); }

void write_dataset(const std::string& path) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const at::Tensor images = (at::rand({kImages, 8, 8, 1}, gen, at::kFloat) * 255.0).to(at::kByte);  // (N, 8, 8, 1)
  data::DatasetInfo info;
  info.count = kImages, info.height = 8, info.width = 8, info.channels = 1;
  info.has_labels = true, info.num_classes = kClasses, info.source = "random (tests/trainer/sample_eval)";
  data::DatasetWriter w(path, info);
  w.write_images(0, images);
  w.write_labels(at::arange(kImages, at::kLong) % kClasses);
  w.finish();
}

// A run dir with one checkpoint (step 7) of a freshly initialised tiny U-Net; EMA 0.9 holds the
// parameters scaled by 0.5, EMA 0.99 the parameters themselves.
TrainConfig make_run(const std::string& run_dir, const std::string& data, int64_t classes) {
  TrainConfig c;
  c.data = data, c.run_dir = run_dir, c.model = "tiny";
  c.model_overrides = Json{{"in_channels", 1}, {"out_channels", 1}, {"image_size", 8}};
  c.schedule = "cosine", c.diffusion_steps = 20, c.var_type = "learned-range", c.loss_type = "rescaled-mse";
  c.num_classes = classes, c.label_dropout = classes > 0 ? 0.1 : 0.0;
  c.ema_rates = {0.9, 0.99}, c.global_batch = 4, c.max_steps = 7, c.metrics_addr = "none";
  c.sample_respacing = "5";
  validate(c);
  torch::manual_seed(5);
  model::UNet net = make_unet(c);
  {  // zero-initialised layers (output, residual outputs) would hide x, t and the labels: fill them
    torch::NoGradGuard g;
    for (auto& p : net->named_parameters()) {
      if (p.value().abs().max().item<double>() == 0.0) p.value().normal_(0.0, 0.05);
    }
  }
  TrainState s;
  s.step = 7, s.images_seen = 28;
  s.model = model::state_dict(*net);
  model::TensorDict half, same;
  for (const auto& p : net->named_parameters()) {
    half.emplace_back(p.key(), p.value().detach() * 0.5);
    same.emplace_back(p.key(), p.value().detach().clone());
  }
  s.emas = {{0.9, half}, {0.99, same}};
  s.config = to_json(c);
  CheckpointStore(run_dir).save(s);
  return c;
}

class SampleEval : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = ddpm::testing::temp_dir("sample_eval");
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    write_dataset(dir_ + "/test.h5");
    make_run(dir_ + "/uncond", dir_ + "/test.h5", 0);
    make_run(dir_ + "/cond", dir_ + "/test.h5", kClasses);
  }
  static std::string dir_;
};
std::string SampleEval::dir_;

TEST_F(SampleEval, LoadsTheChosenWeightsAndNamesTheAvailableRates) {
  const auto raw = load_model(dir_ + "/uncond", "none", c10::kCPU);
  const auto ema = load_model(dir_ + "/uncond/checkpoints/000007", "", c10::kCPU);  // first EMA: 0.9
  ASSERT_TRUE(ema.ema_rate.has_value());
  EXPECT_EQ(*ema.ema_rate, 0.9);
  EXPECT_EQ(raw.step, 7);
  auto p_raw = raw.unet->named_parameters(), p_ema = ema.unet->named_parameters();
  for (const auto& item : p_raw) {
    ASSERT_TRUE(ddpm::testing::tensors_near(p_ema[item.key()], item.value() * 0.5, 0, 0, item.key()));
  }
  try {
    load_model(dir_ + "/uncond", "0.5", c10::kCPU);
    FAIL() << "no error for a missing EMA rate";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("available: 0.9, 0.99"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_model(dir_ + "/nowhere", "", c10::kCPU), CheckpointError);
}

TEST_F(SampleEval, CorruptedCheckpointIsRefused) {
  const std::string copy = dir_ + "/corrupt";
  fs::remove_all(copy);
  fs::copy(dir_ + "/uncond/checkpoints/000007", copy);
  {
    std::fstream f(copy + "/model.pt", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-100, std::ios::end);
    f.put('\x5a');
  }
  try {
    load_model(copy, "", c10::kCPU);
    FAIL() << "no error for a corrupted model.pt";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("SHA-256"), std::string::npos) << e.what();
  }
}

// eps = eps_u + s (eps_c - eps_u) on the first C channels, the conditional variance part kept.
TEST_F(SampleEval, GuidanceFollowsTheFormula) {
  auto m = load_model(dir_ + "/cond", "none", c10::kCPU);
  torch::NoGradGuard no_grad;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const at::Tensor x = at::randn({3, 1, 8, 8}, gen, at::kFloat);  // (N, C, H, W)
  const at::Tensor t = at::tensor(std::vector<int64_t>{2, 9, 17}, at::kLong);
  const at::Tensor y = at::tensor(std::vector<int64_t>{0, 2, 1}, at::kLong);
  const at::Tensor cond = m.unet->forward(x, t, y), uncond = m.unet->forward(x, t, at::full_like(y, kClasses));
  ASSERT_EQ(cond.size(1), 2);  // eps and the learned-range v
  ASSERT_GT((cond - uncond).abs().max().item<double>(), 1e-4) << "labels must change the output";
  for (double s : {0.0, 1.0, 3.0}) {
    const at::Tensor got = guided_model_fn(m.unet, y, s)(x, t);
    const at::Tensor eps = uncond.slice(1, 0, 1) + s * (cond.slice(1, 0, 1) - uncond.slice(1, 0, 1));
    const std::string label = "scale " + std::to_string(s);
    // One 2N-image forward against two N-image ones: float32 rounding only (|eps_c - eps_u| > 1e-4).
    EXPECT_TRUE(ddpm::testing::tensors_near(got.slice(1, 0, 1), eps, 1e-4, 1e-5, label + " eps"));
    EXPECT_TRUE(ddpm::testing::tensors_near(got.slice(1, 1, 2), cond.slice(1, 1, 2), 1e-4, 1e-5, label + " var"));
  }
  auto u = load_model(dir_ + "/uncond", "none", c10::kCPU);
  EXPECT_THROW(guided_model_fn(u.unet, y, 2.0), std::invalid_argument);
}

TEST_F(SampleEval, NpzWriterRoundTrips) {
  const at::Tensor a = at::arange(24, at::kLong).reshape({2, 3, 4}).to(at::kByte), b = at::arange(5, at::kLong) - 2;
  data::write_npz(dir_ + "/rt.npz", {{"arr_0", a}, {"arr_1", b}});
  const auto back = data::read_npz(dir_ + "/rt.npz");
  ASSERT_EQ(back.size(), 2u);
  EXPECT_TRUE(at::equal(back.at("arr_0"), a));
  EXPECT_TRUE(at::equal(back.at("arr_1"), b));
}

// The same samples on 1 and 2 ranks (noise per global index), equal to an in-process run.
TEST_F(SampleEval, SamplesDoNotDependOnRankCount) {
  const std::string flags = " --checkpoint " + dir_ + "/cond --num-samples 5 --batch-size 2 --respacing 5 --seed 9"
                            " --guidance-scale 2 --ema 0.99";
  ASSERT_EQ(run(mpirun(1) + bin("ddpm_sample") + flags + " --out " + dir_ + "/s1.npz --grid " + dir_ + "/s1.png",
                dir_ + "/s1.txt"), 0) << read_text(dir_ + "/s1.txt");
  ASSERT_EQ(run(mpirun(2) + bin("ddpm_sample") + flags + " --out " + dir_ + "/s2.npz", dir_ + "/s2.txt"), 0)
      << read_text(dir_ + "/s2.txt");
  EXPECT_NE(read_text(dir_ + "/s1.txt").find("batch 3/3"), std::string::npos) << read_text(dir_ + "/s1.txt");
  EXPECT_TRUE(fs::exists(dir_ + "/s1.png"));
  const auto one = data::read_npz(dir_ + "/s1.npz"), two = data::read_npz(dir_ + "/s2.npz");
  const at::Tensor a0 = one.at("arr_0");
  ASSERT_EQ(a0.sizes(), at::IntArrayRef({5, 8, 8, 1}));
  ASSERT_EQ(a0.scalar_type(), at::kByte);
  ASSERT_EQ(one.at("arr_1").scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(a0, two.at("arr_0"))) << "1 vs 2 ranks, max diff "
      << (a0.to(at::kInt) - two.at("arr_0").to(at::kInt)).abs().max().item<int>();
  EXPECT_TRUE(at::equal(one.at("arr_1"), two.at("arr_1")));
  EXPECT_GT(a0.to(at::kFloat).std().item<double>(), 1.0) << "samples are constant";

  // In process, all 5 in one batch: the same up to float rounding in a different batch size.
  auto m = load_model(dir_ + "/cond", "0.99", c10::kCPU);
  SampleRequest req;
  req.respacing = "5", req.seed = 9, req.guidance = true, req.guidance_scale = 2.0;
  const auto direct = sample_indices(m, make_diffusion(m.config, "5"), req, 0, 5, c10::kCPU);
  const at::Tensor diff = (data::to_uint8_nhwc(direct.images).to(at::kInt) - a0.to(at::kInt)).abs();
  std::cout << "[maxdiff] npz vs in-process uint8: " << diff.max().item<int>() << std::endl;
  EXPECT_LE(diff.max().item<int>(), 1);
  EXPECT_TRUE(at::equal(direct.labels, one.at("arr_1")));

  const char* py = std::getenv("DDPM_PYTHON");
  if (py && *py) {
    const std::string check = std::string(py) + " -c \"import numpy as n; d = n.load('" + dir_ + "/s2.npz'); "
                              "assert d['arr_0'].shape == (5, 8, 8, 1) and d['arr_0'].dtype == n.uint8, d['arr_0'].shape; "
                              "assert d['arr_1'].dtype == n.int64 and d['arr_1'].shape == (5,)\"";
    EXPECT_EQ(run(check, dir_ + "/py.txt"), 0) << read_text(dir_ + "/py.txt");
  }
}

// Every sampler (ancestral, DDIM and the score-SDE samplers) gives the same bytes on 1 and 2 ranks
// (x_T and every step's noise from each sample's generator); --sampler ddim --steps 4 is
// --respacing ddim4.
TEST_F(SampleEval, EverySamplerIsTheSameOnOneAndTwoRanks) {
  const std::string base = " --checkpoint " + dir_ + "/cond --num-samples 3 --batch-size 2 --seed 4 --ema 0.99 --steps 4";
  for (const std::string sampler : {"ancestral", "ddim", "euler-maruyama", "pf-ode-euler", "pf-ode-heun", "dpm-solver++2m"}) {
    const std::string flags = base + " --sampler " + sampler, name = dir_ + "/" + sampler;
    ASSERT_EQ(run(mpirun(1) + bin("ddpm_sample") + flags + " --out " + name + "1.npz", name + "1.txt"), 0)
        << read_text(name + "1.txt");
    ASSERT_EQ(run(mpirun(2) + bin("ddpm_sample") + flags + " --out " + name + "2.npz", name + "2.txt"), 0)
        << read_text(name + "2.txt");
    const std::string header = sampler == "ancestral" ? "4 steps (4)" : sampler == "ddim" ? "4 steps (ddim4)"
                                                                                          : sampler + ", 4 steps";
    EXPECT_NE(read_text(name + "1.txt").find(header), std::string::npos) << read_text(name + "1.txt");
    const at::Tensor a = data::read_npz(name + "1.npz").at("arr_0"), b = data::read_npz(name + "2.npz").at("arr_0");
    ASSERT_EQ(a.sizes(), at::IntArrayRef({3, 8, 8, 1}));
    EXPECT_TRUE(at::equal(a, b)) << sampler << ": 1 vs 2 ranks, max diff "
                                 << (a.to(at::kInt) - b.to(at::kInt)).abs().max().item<int>();
    EXPECT_GT(a.to(at::kFloat).std().item<double>(), 1.0) << sampler << ": samples are constant";
  }
  // --dpm-lambda-min=-1e9 starts DPM-Solver++ at step T-1 = 19 (the clipped last beta) instead of 18.
  const std::string dpm = base + " --sampler dpm-solver++2m --out " + dir_ + "/dpm_unclipped.npz --dpm-lambda-min=-1e9";
  ASSERT_EQ(run(bin("ddpm_sample") + dpm, dir_ + "/dpm_unclipped.txt"), 0) << read_text(dir_ + "/dpm_unclipped.txt");
  EXPECT_FALSE(at::equal(data::read_npz(dir_ + "/dpm_unclipped.npz").at("arr_0"),
                         data::read_npz(dir_ + "/dpm-solver++2m1.npz").at("arr_0")))
      << "--dpm-lambda-min must move DPM-Solver++'s first step";
  const std::string u = bin("ddpm_sample") + " --checkpoint " + dir_ + "/uncond --num-samples 2 --seed 4 --out " + dir_;
  ASSERT_EQ(run(u + "/dd1.npz --sampler ddim --steps 4", dir_ + "/dd1.txt"), 0) << read_text(dir_ + "/dd1.txt");
  ASSERT_EQ(run(u + "/dd2.npz --respacing ddim4", dir_ + "/dd2.txt"), 0) << read_text(dir_ + "/dd2.txt");
  EXPECT_TRUE(at::equal(data::read_npz(dir_ + "/dd1.npz").at("arr_0"), data::read_npz(dir_ + "/dd2.npz").at("arr_0")));
}

TEST_F(SampleEval, DdimUnconditionalFixedClassErrors) {
  const std::string base = bin("ddpm_sample") + " --checkpoint " + dir_ + "/uncond --num-samples 3 --batch-size 3 ";
  ASSERT_EQ(run(base + "--respacing ddim4 --eta 0 --out " + dir_ + "/d.npz", dir_ + "/d.txt"), 0) << read_text(dir_ + "/d.txt");
  const auto d = data::read_npz(dir_ + "/d.npz");
  EXPECT_EQ(d.count("arr_1"), 0u) << "unconditional models write no labels";
  EXPECT_EQ(d.at("arr_0").sizes(), at::IntArrayRef({3, 8, 8, 1}));

  const struct {
    std::string args, expect;
  } bad[] = {
      {"--guidance-scale 2 --out " + dir_ + "/x.npz", "unconditional"},
      {"--ema 0.5 --out " + dir_ + "/x.npz", "available: 0.9, 0.99"},
      {"--class 1 --out " + dir_ + "/x.npz", "unconditional"},
      {"--sampler heun --out " + dir_ + "/x.npz", "--sampler heun: unknown; known: ancestral, ddim, euler-maruyama"},
      {"--sampler pf-ode-heun --respacing 5 --out " + dir_ + "/x.npz", "give --steps N instead"},
      {"--sampler dpm-solver++2m --steps 50 --out " + dir_ + "/x.npz",
       "--steps 50: give 1..19 (the diffusion has T = 20 steps, of which dpm-solver++2m uses 19)"},
      {"--steps 4 --out " + dir_ + "/x.npz", "--steps: give --sampler too"},
      {"--sampler ddim --steps 4 --respacing 5 --out " + dir_ + "/x.npz", "give one of them"},
  };
  for (const auto& b : bad) {
    EXPECT_EQ(run(base + b.args, dir_ + "/bad.txt"), 1) << b.args;
    EXPECT_NE(read_text(dir_ + "/bad.txt").find(b.expect), std::string::npos) << read_text(dir_ + "/bad.txt");
  }
  EXPECT_EQ(run(bin("ddpm_sample") + " --checkpoint " + dir_ + "/none --out " + dir_ + "/x.npz", dir_ + "/bad.txt"), 1);
  EXPECT_NE(read_text(dir_ + "/bad.txt").find("no such run directory"), std::string::npos) << read_text(dir_ + "/bad.txt");
  const std::string cond = bin("ddpm_sample") + " --checkpoint " + dir_ + "/cond --num-samples 2 --respacing 2 ";
  EXPECT_EQ(run(cond + "--class 5 --out " + dir_ + "/x.npz", dir_ + "/bad.txt"), 1);
  EXPECT_NE(read_text(dir_ + "/bad.txt").find("0..2"), std::string::npos) << read_text(dir_ + "/bad.txt");
  ASSERT_EQ(run(cond + "--class 2 --out " + dir_ + "/c.npz", dir_ + "/c.txt"), 0) << read_text(dir_ + "/c.txt");
  EXPECT_TRUE(at::equal(data::read_npz(dir_ + "/c.npz").at("arr_1"), at::full({2}, 2, at::kLong)));
}

// Bits/dim of ddpm_eval on 1 and 2 ranks against calc_bpd_loop over the whole set in one call.
TEST_F(SampleEval, EvalBpdMatchesDirectComputation) {
  auto m = load_model(dir_ + "/uncond", "0.99", c10::kCPU);
  const auto diffusion = make_diffusion(m.config);
  const int64_t T = diffusion.num_timesteps();
  const at::Tensor images = data::ImageDataset::open(dir_ + "/test.h5").read_all_images();  // (N, 8, 8, 1)
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < kImages; ++i) idx.push_back(i);
  const at::Tensor noise = per_sample_normal(4, idx, {T, 1, 8, 8}).transpose(0, 1).contiguous();  // (T, N, C, H, W)
  diffusion::BpdTerms terms;
  {
    torch::NoGradGuard g;
    terms = diffusion.calc_bpd_loop(model_fn(m.unet), to_model_input(images), true, std::nullopt, noise);
  }
  const double want_total = terms.total_bpd.to(at::kDouble).mean().item<double>();
  const double want_prior = terms.prior_bpd.to(at::kDouble).mean().item<double>();
  const double want_vb0 = terms.vb.to(at::kDouble).mean(0)[0].item<double>();
  for (int np : {1, 2}) {
    const std::string json = dir_ + "/eval" + std::to_string(np) + ".json";
    const std::string cmd = mpirun(np) + bin("ddpm_eval") + " --checkpoint " + dir_ + "/uncond --ema 0.99 --data " +
                            dir_ + "/test.h5 --batch-size 2 --seed 4 --out-json " + json;
    ASSERT_EQ(run(cmd, dir_ + "/eval.txt"), 0) << read_text(dir_ + "/eval.txt");
    EXPECT_NE(read_text(dir_ + "/eval.txt").find("t quartile 3"), std::string::npos);
    const auto j = nlohmann::json::parse(read_text(json));
    const double total = j["total_bpd"], prior = j["prior_bpd"], vb0 = j["vb"][0];
    std::cout << "[maxdiff] np" << np << " total bpd " << total << " vs " << want_total << ": "
              << std::abs(total - want_total) << std::endl;
    EXPECT_EQ(j["count"], kImages);
    EXPECT_NEAR(total, want_total, 1e-6 * std::abs(want_total));
    EXPECT_NEAR(prior, want_prior, 1e-6 * std::abs(want_prior) + 1e-12);
    EXPECT_NEAR(vb0, want_vb0, 1e-6 * std::abs(want_vb0));
    double sum_q = prior;
    for (int q = 0; q < 4; ++q) sum_q += j["vb_q"][q].get<double>();
    // total_bpd is summed per image in float32 by calc_bpd_loop; the quartiles in float64.
    EXPECT_NEAR(sum_q, total, 1e-6 * std::abs(total)) << "quartile vb terms + prior must add up to the total";
  }
  EXPECT_EQ(run(bin("ddpm_eval") + " --checkpoint " + dir_ + "/uncond --data " + dir_ + "/missing.h5",
                dir_ + "/bad.txt"), 1);
  EXPECT_NE(read_text(dir_ + "/bad.txt").find("missing.h5"), std::string::npos) << read_text(dir_ + "/bad.txt");
}

// ddpm_eval --ode-bpd on 1 and 2 ranks against ode_log_likelihood called here on the same
// dequantized images (x = (u - 1/2 + U) / 127.5 - 1, U then the Rademacher probe from (seed, index)):
// bpd = -log p / (D log 2) + log2(127.5).
TEST_F(SampleEval, OdeBpdMatchesDirectComputation) {
  auto m = load_model(dir_ + "/uncond", "0.99", c10::kCPU);
  const auto diffusion = make_diffusion(m.config);
  const at::Tensor images = data::ImageDataset::open(dir_ + "/test.h5").read_all_images();  // (N, 8, 8, 1)
  std::vector<at::Tensor> u, v;
  for (int64_t i = 0; i < kImages; ++i) {
    at::Generator g = sample_generator(4, i);
    u.push_back(at::rand({1, 8, 8}, g, at::kFloat));
    v.push_back(at::randint(0, 2, {1, 8, 8}, g, at::kFloat) * 2.0 - 1.0);
  }
  const at::Tensor x = (images.permute({0, 3, 1, 2}).to(at::kFloat) - 0.5 + at::stack(u)) / 127.5 - 1.0;
  for (auto& p : m.unet->parameters()) p.requires_grad_(false);
  const auto r = diffusion::ode_log_likelihood(diffusion, model_fn(m.unet), x, at::stack(v), 3);
  const double want = (-r.log_p / (64.0 * std::log(2.0)) + std::log2(127.5)).mean().item<double>();
  for (int np : {1, 2}) {
    const std::string json = dir_ + "/ode" + std::to_string(np) + ".json";
    ASSERT_EQ(run(mpirun(np) + bin("ddpm_eval") + " --checkpoint " + dir_ + "/uncond --ema 0.99 --data " + dir_ +
                      "/test.h5 --batch-size 2 --seed 4 --ode-bpd --ode-steps 3 --out-json " + json,
                  dir_ + "/ode.txt"), 0) << read_text(dir_ + "/ode.txt");
    EXPECT_NE(read_text(dir_ + "/ode.txt").find("ode bits/dim: "), std::string::npos) << read_text(dir_ + "/ode.txt");
    const auto j = nlohmann::json::parse(read_text(json));
    const double got = j["ode_bpd"];
    std::cout << "[maxdiff] np" << np << " ode bpd " << got << " vs in-process " << want << ": " << std::abs(got - want)
              << std::endl;
    EXPECT_EQ(j["ode_count"], kImages);
    EXPECT_EQ(j.count("total_bpd"), 0u) << "--ode-bpd alone computes no T-step bound";
    EXPECT_NEAR(got, want, 1e-5 * std::abs(want));  // float32 network, batches of 2 against one of 6
  }
  EXPECT_EQ(run(bin("ddpm_eval") + " --checkpoint " + dir_ + "/uncond --data " + dir_ + "/test.h5 --ode-bpd --ode-steps 20",
                dir_ + "/bad.txt"), 1);
  EXPECT_NE(read_text(dir_ + "/bad.txt").find("--ode-steps 20: give 1..19"), std::string::npos) << read_text(dir_ + "/bad.txt");
}

}  // namespace
}  // namespace ddpm::trainer
