// FID during training and ddpm_eval --fid on a tiny run with a TorchScript extractor from
// fid_train_reference.py: 2-rank training FID = 1-rank ddpm_eval = numpy float64; training
// unchanged by FID; reference statistics cached once; ddpm_fid pushed; configuration errors.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <thread>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "ddpm/trainer/checkpoint.h"
#include "ddpm/trainer/config.h"
#include "ddpm/evaluation/fid_eval.h"
#include "testing/testing.h"
#include "trainer/loop/loop_fixtures.h"

namespace ddpm::trainer {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using ddpm::testing::bin;
using ddpm::testing::mpirun;
std::string golden_path(const std::string& file) { return ddpm::testing::binary_dir() + "/golden/" + file; }

using ddpm::testing::read_text;

int run(const std::string& cmd, const std::string& log) { return ddpm::testing::run_command(cmd, log, /*cpu_only=*/true); }

std::vector<json> events(const std::string& log_jsonl, const std::string& event) {
  std::vector<json> out;
  std::ifstream in(log_jsonl);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    json j = json::parse(line);
    if (j.value("event", "") == event) out.push_back(j);
  }
  return out;
}

// A free TCP port on 127.0.0.1 (bound to port 0 and released).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  return ok ? ntohs(a.sin_port) : 0;
}

// Debian's prometheus-pushgateway on `port` (its persistence file in `dir`), ready; 0 on failure.
pid_t start_pushgateway(int port, const std::string& dir) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string listen = "--web.listen-address=127.0.0.1:" + std::to_string(port);
    const std::string persist = "--persistence.file=" + dir + "/pushgateway.data";
    const std::string log = dir + "/pushgateway.txt";
    if (!std::freopen(log.c_str(), "w", stdout) || !std::freopen(log.c_str(), "a", stderr)) ::_exit(127);
    ::execlp("prometheus-pushgateway", "prometheus-pushgateway", listen.c_str(), persist.c_str(), nullptr);
    ::_exit(127);
  }
  const std::string ready = "curl -sf http://127.0.0.1:" + std::to_string(port) + "/-/ready > /dev/null 2>&1";
  for (int i = 0; i < 100; ++i) {
    if (std::system(ready.c_str()) == 0) return pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ::kill(pid, SIGTERM);
  ::waitpid(pid, nullptr, 0);
  return 0;
}

void expect_rel(double actual, double expected, double rtol, const std::string& label) {
  const double diff = std::abs(actual - expected);
  std::cout << "[maxdiff] " << label << ": " << actual << " vs " << expected << ", abs " << diff << " rel "
            << diff / std::max(1e-300, std::abs(expected)) << " (rtol " << rtol << ")" << std::endl;
  EXPECT_LE(diff, rtol * std::abs(expected)) << label;
}

class FidTrain : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = ddpm::testing::temp_dir("fid_train");
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    testing::write_tiny_dataset(dir_ + "/data.h5", 64);
  }
  static std::string train_flags(const std::string& run_dir, int64_t max_steps,
                                 const std::string& extractor = golden_path("fid_train_extractor.pt"),
                                 bool fid = true) {
    const std::string common = " --data " + dir_ + "/data.h5 --run-dir " + run_dir +
           " --model tiny --model-overrides '{\"in_channels\":1,\"out_channels\":1}' --schedule cosine"
           " --diffusion-steps 4 --global-batch 8 --lr 1e-3 --ema-rates 0.9,0.99 --seed 3 --sample-seed 5"
           " --sample-respacing 2 --save-every 2 --keep-last 0 --log-every 1 --metrics-addr none --max-steps " +
           std::to_string(max_steps);
    return !fid ? common : common + " --fid-every 2 --fid-samples 12 --fid-sampling 2 --fid-extractor torchscript:" +
           extractor + " --fid-stats " + dir_ + "/stats/fid_stats.h5";
  }
  static std::string dir_;
};
std::string FidTrain::dir_;

TEST_F(FidTrain, RankBatchesDoNotDependOnWorldSize) {
  using Range = std::pair<int64_t, int64_t>;
  EXPECT_EQ(evaluation::fid_rank_range(12, 8, 0, 1), Range(0, 12));
  EXPECT_EQ(evaluation::fid_rank_range(12, 8, 0, 2), Range(0, 8));
  EXPECT_EQ(evaluation::fid_rank_range(12, 8, 1, 2), Range(8, 12));
  EXPECT_EQ(evaluation::fid_rank_range(12, 8, 0, 3), Range(0, 0));
  EXPECT_EQ(evaluation::fid_rank_range(12, 8, 2, 3), Range(8, 12));
  EXPECT_EQ(evaluation::fid_rank_range(10, 2, 1, 2), Range(4, 10));
}

// Two ranks train with --fid-every 2 for 3 steps (FID at 2 and, at the end, 3), then resume to 4.
TEST_F(FidTrain, TwoRankTrainingFidMatchesEvalAndNumpy) {
  const std::string run_dir = dir_ + "/run", stats = dir_ + "/stats/fid_stats.h5";
  ASSERT_EQ(run(mpirun(2) + bin("ddpm_train") + train_flags(run_dir, 3), dir_ + "/train1.txt"), 0)
      << read_text(dir_ + "/train1.txt");
  const std::string out1 = read_text(dir_ + "/train1.txt");
  EXPECT_NE(out1.find("fid step=2 value="), std::string::npos) << out1;
  EXPECT_NE(out1.find("extractor=torchscript:fid_train_extractor.pt samples=12 seconds="), std::string::npos) << out1;
  EXPECT_NE(out1.find("computed from 64 images"), std::string::npos) << out1;

  const std::string log = run_dir + "/log.jsonl";
  auto refs = events(log, "fid_reference");
  ASSERT_EQ(refs.size(), 1u);
  EXPECT_FALSE(refs[0]["cached"].get<bool>());
  EXPECT_EQ(refs[0]["count"], 64);
  auto fids = events(log, "fid");
  ASSERT_EQ(fids.size(), 2u) << "FID at step 2 (fid_every) and 3 (the end)";
  std::map<int64_t, double> fid_at;
  for (const auto& f : fids) {
    EXPECT_EQ(f["extractor"], "torchscript:fid_train_extractor.pt");
    EXPECT_EQ(f["samples"], 12);
    EXPECT_EQ(f["ema_rate"], "0.9");
    EXPECT_GT(f["fid"].get<double>(), 0.0);
    fid_at[f["step"].get<int64_t>()] = f["fid"].get<double>();
  }
  ASSERT_EQ(fid_at.count(2), 1u);
  ASSERT_EQ(fid_at.count(3), 1u);
  EXPECT_NE(fid_at[2], fid_at[3]) << "the EMA model changed between steps 2 and 3";
  ASSERT_TRUE(fs::exists(stats));
  const auto stats_time = fs::last_write_time(stats);

  // ddpm_eval --fid on one rank with the run's defaults: the same samples, hence the same FID.
  for (int64_t step : {2, 3}) {
    const std::string ckpt = run_dir + "/checkpoints/00000" + std::to_string(step);
    const std::string js = dir_ + "/eval" + std::to_string(step) + ".json";
    ASSERT_EQ(run(mpirun(1) + bin("ddpm_eval") + " --checkpoint " + ckpt + " --fid --out-json " + js,
                  dir_ + "/eval.txt"), 0) << read_text(dir_ + "/eval.txt");
    const std::string out = read_text(dir_ + "/eval.txt");
    EXPECT_NE(out.find("loaded from the cache"), std::string::npos) << out;
    EXPECT_NE(out.find("extractor=torchscript:fid_train_extractor.pt"), std::string::npos) << out;
    const json j = json::parse(read_text(js));
    EXPECT_EQ(j["fid_extractor"], "torchscript:fid_train_extractor.pt");
    EXPECT_EQ(j["fid_samples"], 12);
    EXPECT_EQ(j["ranks"], 1);
    expect_rel(j["fid"].get<double>(), fid_at[step], 1e-6, "step " + std::to_string(step) + " 2-rank train vs 1-rank eval");
  }
  // Another sampling batch draws the same samples (seeded by global index): only the summation
  // order of the batched network calls changes.
  {
    const std::string js = dir_ + "/eval_b5.json";
    ASSERT_EQ(run(mpirun(1) + bin("ddpm_eval") + " --checkpoint " + run_dir + "/checkpoints/000003 --fid --fid-batch 5" +
                      " --out-json " + js, dir_ + "/eval_b5.txt"), 0) << read_text(dir_ + "/eval_b5.txt");
    expect_rel(json::parse(read_text(js))["fid"].get<double>(), fid_at[3], 1e-4, "step 3 --fid-batch 5 vs the run's batch");
  }

  // FID leaves training alone: step 3 (after the FID at step 2) is bit-for-bit a run without FID.
  ASSERT_EQ(run(mpirun(2) + bin("ddpm_train") + train_flags(dir_ + "/nofid", 3, "", false), dir_ + "/nofid.txt"), 0)
      << read_text(dir_ + "/nofid.txt");
  {
    const TrainState with = load_checkpoint(run_dir + "/checkpoints/000003");
    const TrainState without = load_checkpoint(dir_ + "/nofid/checkpoints/000003");
    EXPECT_TRUE(testing::dicts_identical(with.model, without.model, "step 3 model.pt with vs without FID"));
    ASSERT_EQ(with.emas.size(), 2u);
    EXPECT_TRUE(testing::dicts_identical(with.emas[0].second, without.emas[0].second, "step 3 EMA 0.9"));
  }

  // The float64 numpy FID of the same samples (ddpm_sample: same seed, respacing and batches).
  const char* py = std::getenv("DDPM_PYTHON");
  ASSERT_TRUE(py && *py) << "DDPM_PYTHON is not set";
  ASSERT_EQ(run(bin("ddpm_sample") + " --checkpoint " + run_dir + "/checkpoints/000002 --num-samples 12 --batch-size 8"
                " --respacing 2 --seed 5 --out " + dir_ + "/s2.npz", dir_ + "/sample.txt"), 0)
      << read_text(dir_ + "/sample.txt");
  ASSERT_EQ(run(std::string(py) + " " + ddpm::testing::source_dir() + "/tests/reference/fid_train_reference.py --fid"
                " --samples " + dir_ + "/s2.npz --data " + dir_ + "/data.h5 --golden " + golden_path("fid_train.h5") +
                " --json " + dir_ + "/numpy.json", dir_ + "/numpy.txt"), 0) << read_text(dir_ + "/numpy.txt");
  const json np = json::parse(read_text(dir_ + "/numpy.json"));
  EXPECT_EQ(np["reference"], 64);
  // float32 features (TorchScript) against float64 ones.
  expect_rel(fid_at[2], np["fid"].get<double>(), 1e-4, "step 2 training FID vs numpy float64");

  // Resume to step 4: the reference statistics come from the cache, the file is not rewritten.
  ASSERT_EQ(run(mpirun(2) + bin("ddpm_train") + train_flags(run_dir, 4), dir_ + "/train2.txt"), 0)
      << read_text(dir_ + "/train2.txt");
  EXPECT_NE(read_text(dir_ + "/train2.txt").find("loaded from the cache"), std::string::npos)
      << read_text(dir_ + "/train2.txt");
  refs = events(log, "fid_reference");
  ASSERT_EQ(refs.size(), 2u);
  EXPECT_TRUE(refs[1]["cached"].get<bool>());
  fids = events(log, "fid");
  ASSERT_EQ(fids.size(), 3u);
  EXPECT_EQ(fids[2]["step"], 4);
  EXPECT_TRUE(fs::last_write_time(stats) == stats_time) << "the reference statistics were rewritten";
}

// ddpm_eval --fid --sampler/--steps: ancestral with --steps 2 is the run's --fid-sampling 2 (the
// training FID); a score-SDE sampler gives the same FID on 1 and 2 ranks, equal to the float64 numpy
// FID of ddpm_sample's samples with the same sampler, steps, seed and batches.
TEST_F(FidTrain, EvalSamplerFlagsMatchTrainingAndDdpmSample) {
  const std::string run_dir = dir_ + "/samplers";
  ASSERT_EQ(run(mpirun(1) + bin("ddpm_train") + train_flags(run_dir, 2), dir_ + "/samplers.txt"), 0)
      << read_text(dir_ + "/samplers.txt");
  const auto fids = events(run_dir + "/log.jsonl", "fid");
  ASSERT_EQ(fids.size(), 1u);
  const std::string eval = bin("ddpm_eval") + " --checkpoint " + run_dir + " --fid --out-json ";
  const auto fid_of = [&](const std::string& cmd, const std::string& name) {
    EXPECT_EQ(run(cmd, dir_ + "/" + name + ".txt"), 0) << read_text(dir_ + "/" + name + ".txt");
    return json::parse(read_text(dir_ + "/" + name + ".json"));
  };
  const json anc = fid_of(mpirun(1) + eval + dir_ + "/anc.json --sampler ancestral --steps 2", "anc");
  expect_rel(anc["fid"].get<double>(), fids[0]["fid"].get<double>(), 1e-6, "--sampler ancestral --steps 2 vs training");
  EXPECT_EQ(anc["fid_sampling"], "2");
  EXPECT_EQ(anc["fid_sampler"], "ancestral");
  const std::string dpm = " --sampler dpm-solver++2m --steps 3";
  const json one = fid_of(mpirun(1) + eval + dir_ + "/dpm1.json" + dpm, "dpm1");
  const json two = fid_of(mpirun(2) + eval + dir_ + "/dpm2.json" + dpm, "dpm2");
  EXPECT_EQ(one["fid_sampling"], "dpm-solver++2m:3");
  EXPECT_EQ(one["fid_sampler"], "dpm-solver++2m");
  EXPECT_EQ(two["ranks"], 2);
  expect_rel(two["fid"].get<double>(), one["fid"].get<double>(), 1e-6, "dpm-solver++2m 2 ranks vs 1");
  EXPECT_GT(std::abs(one["fid"].get<double>() - anc["fid"].get<double>()), 1e-3) << "another sampler, another FID";

  const char* py = std::getenv("DDPM_PYTHON");
  ASSERT_TRUE(py && *py) << "DDPM_PYTHON is not set";
  ASSERT_EQ(run(bin("ddpm_sample") + " --checkpoint " + run_dir + " --num-samples 12 --batch-size 8 --seed 5" + dpm +
                " --out " + dir_ + "/dpm.npz", dir_ + "/dpm_sample.txt"), 0)
      << read_text(dir_ + "/dpm_sample.txt");
  ASSERT_EQ(run(std::string(py) + " " + ddpm::testing::source_dir() + "/tests/reference/fid_train_reference.py --fid"
                " --samples " + dir_ + "/dpm.npz --data " + dir_ + "/data.h5 --golden " + golden_path("fid_train.h5") +
                " --json " + dir_ + "/dpm_numpy.json", dir_ + "/dpm_numpy.txt"), 0) << read_text(dir_ + "/dpm_numpy.txt");
  expect_rel(one["fid"].get<double>(), json::parse(read_text(dir_ + "/dpm_numpy.json"))["fid"].get<double>(), 1e-4,
             "ddpm_eval dpm-solver++2m vs numpy on ddpm_sample's samples");

  const struct {
    std::string args, expect;
  } bad[] = {
      {" --fid --sampler dpm-solver++2m --fid-sampling 2", "--fid-sampling 2: --sampler dpm-solver++2m chooses its own steps"},
      {" --fid --sampler ddim --steps 2 --fid-sampling 3", "give one of them"},
      {" --sampler ddim --steps 2", "give --fid too"},
  };
  for (const auto& b : bad) {
    EXPECT_EQ(run(bin("ddpm_eval") + " --checkpoint " + run_dir + b.args, dir_ + "/bad.txt"), 1) << b.args;
    EXPECT_NE(read_text(dir_ + "/bad.txt").find(b.expect), std::string::npos) << read_text(dir_ + "/bad.txt");
  }
}

// The FID reaches the Pushgateway as ddpm_fid{ema_rate, extractor, samples} (final push at exit).
TEST_F(FidTrain, FidIsPushedWithItsExtractor) {
  if (std::system("command -v prometheus-pushgateway > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "prometheus-pushgateway is not installed (Debian package prometheus-pushgateway)";
  }
  const std::string work = dir_ + "/push";
  fs::create_directories(work);
  const int port = free_port();
  ASSERT_GT(port, 0);
  const pid_t gw = start_pushgateway(port, work);
  ASSERT_GT(gw, 0) << read_text(work + "/pushgateway.txt");
  const int rc = run(bin("ddpm_train") + train_flags(work + "/run", 2) + " --pushgateway 127.0.0.1:" +
                     std::to_string(port), work + "/train.txt");
  const int got = run("curl -sf http://127.0.0.1:" + std::to_string(port) + "/metrics", work + "/metrics.txt");
  ::kill(gw, SIGTERM);
  ::waitpid(gw, nullptr, 0);
  ASSERT_EQ(rc, 0) << read_text(work + "/train.txt");
  ASSERT_EQ(got, 0) << read_text(work + "/metrics.txt");
  const auto fids = events(work + "/run/log.jsonl", "fid");
  ASSERT_EQ(fids.size(), 1u);
  std::istringstream metrics(read_text(work + "/metrics.txt"));
  int found = 0;
  for (std::string line; std::getline(metrics, line);) {
    if (line.rfind("ddpm_fid{", 0) != 0) continue;
    ++found;
    EXPECT_NE(line.find("ema_rate=\"0.9\""), std::string::npos) << line;
    EXPECT_NE(line.find("extractor=\"torchscript:fid_train_extractor.pt\""), std::string::npos) << line;
    EXPECT_NE(line.find("samples=\"12\""), std::string::npos) << line;
    expect_rel(std::stod(line.substr(line.rfind(' ') + 1)), fids[0]["fid"].get<double>(), 1e-9, "pushed ddpm_fid");
  }
  EXPECT_EQ(found, 1) << read_text(work + "/metrics.txt");
}

TEST_F(FidTrain, ConfigurationErrorsNameTheFlag) {
  const std::string data = dir_ + "/data.h5";
  auto parse = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"ddpm_train", "--data", data, "--run-dir", dir_ + "/x", "--max-steps", "2",
                                     "--diffusion-steps", "100"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    return parse_train_args(static_cast<int>(argv.size()), argv.data());
  };
  const struct {
    std::vector<std::string> args;
    std::vector<std::string> expect;
  } bad[] = {
      {{"--fid-every", "5"}, {"--fid-extractor", "required", "--fid-every 5", "ddpm_fid_net"}},
      {{"--fid-every", "5", "--fid-extractor", "resnet:x.pt"}, {"--fid-extractor", "unknown extractor kind 'resnet'"}},
      {{"--fid-every", "5", "--fid-extractor", "x.pt"}, {"--fid-extractor", "no KIND:"}},
      {{"--fid-every", "5", "--fid-extractor", "domain:"}, {"--fid-extractor", "no file after"}},
      {{"--fid-every", "5", "--fid-extractor", "domain:a.pt", "--fid-sampling", "ddim500"},
       {"--fid-sampling", "more steps than diffusion_steps 100"}},
      {{"--fid-samples", "1"}, {"--fid-samples", ">= 2"}},
  };
  for (const auto& b : bad) {
    try {
      parse(b.args);
      ADD_FAILURE() << "no error for " << b.args.front() << " " << b.args.back();
    } catch (const std::invalid_argument& e) {
      for (const auto& want : b.expect) EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(parse({"--fid-every", "5", "--fid-extractor", "inception:w.pth", "--fid-sampling", "ddim50"}));
  EXPECT_NO_THROW(parse({"--fid-extractor", "nonsense"})) << "unused without --fid-every";
  // Run dirs of earlier versions hold the retired key fid_weights: they still load and resume.
  Json saved = to_json(*parse({}).config);
  saved["fid_weights"] = "";
  EXPECT_NO_THROW(config_from_json(saved, "old state.json"));
  EXPECT_TRUE(resume_differences(saved, to_json(*parse({}).config)).empty());

  // A missing extractor file stops ddpm_train before any step, naming the file and the fix.
  const std::string missing = dir_ + "/nowhere/net.pt";
  EXPECT_EQ(run(bin("ddpm_train") + train_flags(dir_ + "/run_missing", 2, missing),
                dir_ + "/missing.txt"), 1);
  const std::string out = read_text(dir_ + "/missing.txt");
  EXPECT_NE(out.find("the file " + missing + " does not exist"), std::string::npos) << out;
  EXPECT_NE(out.find("torch.jit.save"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir_ + "/run_missing/checkpoints/000002")) << "it trained anyway";
  if (!fs::exists(dir_ + "/run/checkpoints")) return;  // TwoRankTrainingFidMatchesEvalAndNumpy made it
  EXPECT_EQ(run(bin("ddpm_eval") + " --checkpoint " + dir_ + "/run --fid --fid-extractor domain:" + missing,
                dir_ + "/missing_eval.txt"), 1);
  EXPECT_NE(read_text(dir_ + "/missing_eval.txt").find("ddpm_fid_net --data"), std::string::npos)
      << read_text(dir_ + "/missing_eval.txt");
}

}  // namespace
}  // namespace ddpm::trainer
