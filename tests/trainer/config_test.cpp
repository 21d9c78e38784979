// TrainConfig: presets, precedence (preset < config file < flags), --help, JSON round trip, every
// validation error naming its flag, the batch plan, and the resume comparison.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "ddpm/trainer/config.h"
#include "testing/testing.h"

namespace {
using namespace ddpm::trainer;

CliResult parse(std::vector<std::string> args) {
  args.insert(args.begin(), "ddpm_train");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  return parse_train_args(static_cast<int>(argv.size()), argv.data());
}

TrainConfig parse_ok(std::vector<std::string> args) {
  CliResult r = parse(std::move(args));
  EXPECT_TRUE(r.config.has_value());
  return r.config.value_or(TrainConfig{});
}

// The error thrown for `args` must mention every one of `needles`.
void expect_error(std::vector<std::string> args, std::vector<std::string> needles) {
  std::string joined;
  for (const auto& a : args) joined += a + " ";
  try {
    parse(args);
    ADD_FAILURE() << "accepted: " << joined;
  } catch (const std::invalid_argument& e) {
    std::printf("[error] %s-> %s\n", joined.c_str(), e.what());
    for (const auto& n : needles) {
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "args: " << joined << "\nerror: " << e.what() << "\nmissing: " << n;
    }
  }
}

std::string write_file(const std::string& name, const std::string& text) {
  const std::string path = ddpm::testing::temp_dir("config_" + name) + "/" + name;
  std::ofstream(path) << text;
  return path;
}

const std::vector<std::string> kBase = {"--data", "d.h5", "--run-dir", "runs/x"};
std::vector<std::string> with_base(std::vector<std::string> more) {
  std::vector<std::string> v = kBase;
  v.insert(v.end(), more.begin(), more.end());
  return v;
}

TEST(Config, PresetsSetTheirDiffusionAndModel) {
  const TrainConfig ho = parse_ok(with_base({"--preset", "ddpm-cifar10"}));
  EXPECT_EQ(ho.schedule, "linear");
  EXPECT_EQ(ho.loss_type, "mse");
  EXPECT_EQ(ho.mean_type, "eps");
  EXPECT_EQ(ho.var_type, "fixed-large");
  EXPECT_EQ(ho.model, "ddpm-cifar10");
  EXPECT_EQ(ho.diffusion_steps, 1000);
  EXPECT_GT(ho.max_steps, 0);
  const TrainConfig imp = parse_ok(with_base({"--preset", "improved-cifar10"}));
  EXPECT_EQ(imp.schedule, "cosine");
  EXPECT_EQ(imp.var_type, "learned-range");
  EXPECT_EQ(imp.loss_type, "rescaled-mse");
  EXPECT_EQ(imp.timestep_sampler, "loss-second-moment");
  EXPECT_EQ(imp.model, "improved-cifar10");
  const TrainConfig demo = parse_ok(with_base({"--preset", "fmnist-demo"}));
  EXPECT_EQ(demo.model, "fmnist-small");
  EXPECT_EQ(demo.schedule, "cosine");
  EXPECT_EQ(demo.diffusion_steps, 1000);
  EXPECT_EQ(demo.mean_type, "eps");                 // the hybrid recipe: learned sigmas,
  EXPECT_EQ(demo.var_type, "learned-range");        // L_simple + 0.001 L_vlb (T = 1000)
  EXPECT_EQ(demo.loss_type, "rescaled-mse");
  EXPECT_EQ(demo.timestep_sampler, "uniform");
  EXPECT_EQ(demo.sample_respacing, "25");           // few ancestral steps
  EXPECT_EQ(demo.fid_sampling, "25");
  EXPECT_EQ(demo.global_batch, 32);
  EXPECT_EQ(demo.max_steps, 1000);
  EXPECT_EQ(demo.preset, "fmnist-demo");
  for (const auto& name : preset_names()) EXPECT_NO_THROW(validate(parse_ok(with_base({"--preset", name}))));
}

TEST(Config, PrecedencePresetThenFileThenFlags) {
  const std::string file = write_file("prec.json", R"({"preset": "fmnist-demo", "lr": 3e-4, "schedule": "linear",
      "ema_rates": [0.99, 0.9], "model_overrides": {"num_channels": 32, "dropout": 0.1}})");
  const TrainConfig c = parse_ok(with_base({"--config", file, "--lr", "5e-4", "--ema-warmup", "false",
                                            "--model-overrides", R"({"dropout": 0.2})"}));
  EXPECT_EQ(c.preset, "fmnist-demo");                    // named by the file
  EXPECT_EQ(c.model, "fmnist-small");                    // from the preset
  EXPECT_EQ(c.schedule, "linear");                       // the file beats the preset
  EXPECT_DOUBLE_EQ(c.lr, 5e-4);                          // the flag beats the file
  EXPECT_EQ(c.ema_rates, (std::vector<double>{0.99, 0.9}));
  EXPECT_FALSE(c.ema_warmup);                            // the flag beats the preset's true
  EXPECT_EQ(c.model_overrides, Json({{"num_channels", 32}, {"dropout", 0.2}}));  // merged
  EXPECT_EQ(c.config_file, file);
  // A flag preset replaces the file's preset.
  EXPECT_EQ(parse_ok(with_base({"--config", file, "--preset", "ddpm-cifar10"})).model, "ddpm-cifar10");
}

TEST(Config, FlagsOfEveryType) {
  const TrainConfig c = parse_ok(with_base({"--max-steps", "10", "--global-batch", "64", "--lr", "1e-3",
                                            "--rescale-timesteps", "true", "--ema-rates", "0.9999,0.999",
                                            "--resume", "none", "--seed", "-3"}));
  EXPECT_EQ(c.max_steps, 10);
  EXPECT_EQ(c.global_batch, 64);
  EXPECT_DOUBLE_EQ(c.lr, 1e-3);
  EXPECT_TRUE(c.rescale_timesteps);
  EXPECT_EQ(c.ema_rates, (std::vector<double>{0.9999, 0.999}));
  EXPECT_EQ(c.resume, "none");
  EXPECT_EQ(c.seed, -3);
}

TEST(Config, HelpListsEveryFlagWithItsDefault) {
  const CliResult r = parse({"--help"});
  ASSERT_FALSE(r.config.has_value());
  std::printf("%s\n", r.help.c_str());
  for (const auto& k : config_keys()) EXPECT_NE(r.help.find(k.flag + " "), std::string::npos) << k.flag;
  auto line_of = [&](const std::string& flag) {
    const auto at = r.help.find(flag + " ");
    return r.help.substr(at, r.help.find('\n', at) - at);
  };
  EXPECT_NE(line_of("--global-batch").find("128"), std::string::npos) << line_of("--global-batch");
  EXPECT_NE(line_of("--lr-decay").find("constant"), std::string::npos) << line_of("--lr-decay");
  EXPECT_NE(line_of("--ema-rates").find("0.9999"), std::string::npos) << line_of("--ema-rates");
  EXPECT_NE(r.help.find("75"), std::string::npos);           // the requeue exit code
  EXPECT_NE(r.help.find("fmnist-demo"), std::string::npos);  // the presets
}

TEST(Config, JsonRoundTripAndFile) {
  TrainConfig c = parse_ok(with_base({"--preset", "improved-cifar10", "--model-overrides", R"({"a": [1, 2]})"}));
  const Json j = to_json(c);
  EXPECT_EQ(j.size(), config_keys().size());
  EXPECT_EQ(to_json(config_from_json(j, "round trip")), j);
  const std::string path = ddpm::testing::temp_dir("config_file") + "/config.json";
  write_config_file(path, c);
  EXPECT_EQ(read_json_file(path), j);
}

// ddpm_train_classifier's parser: its name and task default in --help and in the config; a
// classifier run refuses what makes images or bits/dim, naming the flag.
TEST(Config, ProgramDefaultsAndTheClassifierTask) {
  CliProgram program;
  program.name = "ddpm_train_classifier";
  program.defaults = Json{{"task", "classifier"}};
  const auto parse_as = [&](std::vector<std::string> args) {
    args.insert(args.begin(), program.name);
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    return parse_train_args(static_cast<int>(argv.size()), argv.data(), program);
  };
  const CliResult help = parse_as({"--help"});
  EXPECT_EQ(help.help.rfind("ddpm_train_classifier: ", 0), 0u) << help.help.substr(0, 80);
  EXPECT_NE(help.help.find("--task TEXT=classifier"), std::string::npos);
  const std::vector<std::string> ok = {"--data", "d.h5", "--run-dir", "r", "--max-steps", "5", "--num-classes", "10"};
  EXPECT_EQ(parse_as(ok).config->task, "classifier");
  EXPECT_EQ(parse_ok({"--data", "d.h5", "--run-dir", "r", "--max-steps", "5"}).task, "diffusion");
  const auto error_of = [&](std::vector<std::string> more) {
    more.insert(more.begin(), ok.begin(), ok.end());
    try {
      parse_as(more);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(error_of({"--sample-every", "100"}).find("--sample-every (key \"sample_every\"): is 100 but --task "
                                                     "classifier"), std::string::npos) << error_of({"--sample-every", "100"});
  EXPECT_NE(error_of({"--fid-every", "100"}).find("--fid-every 0"), std::string::npos);
  EXPECT_NE(error_of({"--bpd-every", "100"}).find("--bpd-every 0"), std::string::npos);
  EXPECT_NE(error_of({"--num-classes", "0"}).find("--num-classes"), std::string::npos);
  EXPECT_NE(error_of({"--preset", "fmnist-demo"}).find("--sample-every"), std::string::npos)
      << "the demo preset's grids must be turned off for a classifier";
}

TEST(Config, EveryBadInputNamesItsFlagAndTheFix) {
  expect_error({"--data", "d.h5", "--max-steps", "5"}, {"--run-dir", "missing"});
  expect_error({"--run-dir", "r", "--max-steps", "5"}, {"--data", "missing"});
  expect_error(kBase, {"--max-steps", "--max-images"});
  const auto b = [](std::vector<std::string> more) {
    more.insert(more.begin(), {"--data", "d.h5", "--run-dir", "r", "--max-steps", "5"});
    return more;
  };
  expect_error(b({"--lrr", "1"}), {"--lrr", "--help"});
  expect_error(b({"--lr", "abc"}), {"--lr", "not a number"});
  expect_error(b({"--lr", "-1"}), {"--lr", "positive"});
  expect_error(b({"--global-batch", "many"}), {"--global-batch", "not an integer"});
  expect_error(b({"--global-batch", "0"}), {"--global-batch", ">= 1"});
  expect_error(b({"--lr-decay", "cos"}), {"--lr-decay", "constant | linear | cosine"});
  expect_error(b({"--schedule", "sigmoid"}), {"--schedule", "linear | cosine"});
  expect_error(b({"--var-type", "large"}), {"--var-type", "fixed-large"});
  expect_error(b({"--loss-type", "hybrid"}), {"--loss-type", "rescaled-mse"});
  expect_error(b({"--mean-type", "epsilon"}), {"--mean-type", "eps | x0 | prev | v"});
  expect_error(b({"--timestep-sampler", "importance"}), {"--timestep-sampler", "loss-second-moment"});
  expect_error(b({"--precision", "fp8"}), {"--precision", "fp32 | bf16 | fp16"});
  expect_error(b({"--ema-rates", "1.5"}), {"--ema-rates", "(0, 1)"});
  expect_error(b({"--ema-rates", "0.9,0.9"}), {"--ema-rates", "twice"});
  expect_error(b({"--ema-warmup", "maybe"}), {"--ema-warmup", "true or false"});
  expect_error(b({"--sample-respacing", "ddimx"}), {"--sample-respacing", "ddim50"});
  expect_error(b({"--sample-respacing", "2000"}), {"--sample-respacing", "2000", "1000"});
  expect_error(b({"--sample-respacing", "10,,5"}), {"--sample-respacing"});
  expect_error(b({"--metrics-addr", "localhost"}), {"--metrics-addr", "HOST:PORT"});
  expect_error(b({"--pushgateway", "h:99999"}), {"--pushgateway", "HOST:PORT"});
  expect_error(b({"--label-dropout", "0.1"}), {"--label-dropout", "--num-classes"});
  expect_error(b({"--adam-beta2", "1"}), {"--adam-beta2", "[0, 1)"});
  expect_error(b({"--loss-scale-backoff", "2"}), {"--loss-scale-backoff"});
  expect_error(b({"--max-nonfinite-steps", "0"}), {"--max-nonfinite-steps"});
  expect_error(b({"--model-overrides", "channels=64"}), {"--model-overrides", "JSON object"});
  expect_error(b({"--model-overrides", "[1]"}), {"--model-overrides", "JSON object"});
  expect_error(b({"--preset", "cifar"}), {"--preset", "cifar", "fmnist-demo"});
  expect_error(b({"--diffusion-steps", "1"}), {"--diffusion-steps"});
  expect_error(b({"--save-every", "0"}), {"--save-every"});
  expect_error(b({"--task", "gan"}), {"--task", "diffusion"});
  expect_error(b({"--task", "autoencoder", "--model-overrides", "{\"channels_last\":true}"}),
               {"--model-overrides", "no U-Net", "--ae-channels"});
}

TEST(Config, ConfigFileErrorsNameTheFileAndKey) {
  const std::string unknown = write_file("unknown.json", R"({"lr": 1e-4, "learning_rate": 2})");
  expect_error(with_base({"--config", unknown, "--max-steps", "5"}), {unknown, "learning_rate", "known keys"});
  const std::string typed = write_file("typed.json", R"({"lr": "fast"})");
  expect_error(with_base({"--config", typed, "--max-steps", "5"}), {typed, "\"lr\"", "a number", "fast"});
  const std::string integer = write_file("integer.json", R"({"global_batch": 12.5})");
  expect_error(with_base({"--config", integer, "--max-steps", "5"}), {"global_batch", "an integer"});
  const std::string broken = write_file("broken.json", R"({"lr": )");
  expect_error(with_base({"--config", broken, "--max-steps", "5"}), {broken, "not valid JSON"});
  expect_error(with_base({"--config", "/no/such/file.json", "--max-steps", "5"}), {"/no/such/file.json"});
  const std::string list = write_file("list.json", R"([1, 2])");
  expect_error(with_base({"--config", list, "--max-steps", "5"}), {list, "JSON object"});
}

TEST(Config, BatchPlanFromTheGlobalBatch) {
  TrainConfig c;
  c.global_batch = 128;
  BatchPlan p = plan_batch(c, 4);
  EXPECT_EQ(p.per_rank_batch, 32);
  EXPECT_EQ(p.microbatch, 32);
  EXPECT_EQ(p.num_microbatches, 1);
  c.microbatch = 8;
  p = plan_batch(c, 4);
  EXPECT_EQ(p.num_microbatches, 4);
  EXPECT_EQ(p.microbatch * p.num_microbatches * p.world_size, c.global_batch);
  c.microbatch = 64;  // larger than the per-rank batch: the per-rank batch in one go
  EXPECT_EQ(plan_batch(c, 4).microbatch, 32);
  EXPECT_EQ(plan_batch(c, 4).num_microbatches, 1);
  c.microbatch = 0;
  c.global_batch = 100;
  try {
    plan_batch(c, 3);
    FAIL() << "100 over 3 accepted";
  } catch (const std::invalid_argument& e) {
    const std::string m = e.what();
    for (const char* n : {"--global-batch", "100", "3 ranks", "99 or 102", "1, 2, 4, 5"}) {
      EXPECT_NE(m.find(n), std::string::npos) << m << "\nmissing: " << n;
    }
  }
  c.global_batch = 128;
  c.microbatch = 5;
  try {
    plan_batch(c, 4);
    FAIL() << "microbatch 5 of 32 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("1, 2, 4, 8, 16, 32"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--microbatch"), std::string::npos) << e.what();
  }
}

TEST(Config, TotalStepsFromStepsOrImages) {
  TrainConfig c;
  c.global_batch = 128;
  c.max_images = 1000;
  EXPECT_EQ(total_steps(c), 8);  // ceil(1000 / 128)
  c.max_steps = 5;
  EXPECT_EQ(total_steps(c), 5);
  c.max_images = 0;
  EXPECT_EQ(total_steps(c), 5);
}

TEST(Config, ResumeComparisonIgnoresSafeKeysOnly) {
  TrainConfig saved = parse_ok(with_base({"--preset", "fmnist-demo"}));
  TrainConfig now = saved;
  now.max_steps *= 2;
  now.log_every = 7;
  now.sample_every = 3;
  now.save_every = 11;
  now.metrics_addr = "127.0.0.1:9100";
  now.resume = "auto";
  now.data = "moved/d.h5";
  EXPECT_TRUE(resume_differences(to_json(saved), to_json(now)).empty());
  // --latent: another path for a latent run's autoencoder (moved; the checkpoint carries it) is no
  // difference; a pixel run made latent is.
  TrainConfig latent_saved = saved, latent_now = now;
  latent_saved.latent = "runs/ae";
  latent_now.latent = "moved/ae";
  EXPECT_TRUE(resume_differences(to_json(latent_saved), to_json(latent_now)).empty());
  ASSERT_EQ(resume_differences(to_json(saved), to_json(latent_now)).size(), 1u);
  EXPECT_EQ(resume_differences(to_json(saved), to_json(latent_now))[0].rfind("latent", 0), 0u);
  EXPECT_NO_THROW(check_resume_config(to_json(saved), to_json(now), "runs/x/config.json"));
  now.lr = 1e-3;
  now.schedule = "linear";
  const auto diffs = resume_differences(to_json(saved), to_json(now));
  ASSERT_EQ(diffs.size(), 2u);
  try {
    check_resume_config(to_json(saved), to_json(now), "runs/x/config.json");
    FAIL() << "differing config accepted";
  } catch (const std::invalid_argument& e) {
    const std::string m = e.what();
    for (const char* n : {"runs/x/config.json", "lr (saved 0.0005, now 0.001)", "schedule (saved \"cosine\", now \"linear\")",
                          "max_steps", "--run-dir"}) {
      EXPECT_NE(m.find(n), std::string::npos) << m << "\nmissing: " << n;
    }
  }
  // A key the saved config lacks (written by an earlier version) differs only when it is not at
  // its default: runs of earlier versions resume.
  Json older = to_json(saved);
  older.erase("task");
  older.erase("label_dropout");
  ASSERT_EQ(saved.label_dropout, TrainConfig{}.label_dropout);
  EXPECT_TRUE(resume_differences(older, to_json(saved)).empty());
  TrainConfig dropped = saved;
  dropped.label_dropout = 0.1;
  const auto newer = resume_differences(older, to_json(dropped));
  ASSERT_EQ(newer.size(), 1u);
  EXPECT_NE(newer[0].find("label_dropout (saved absent"), std::string::npos) << newer[0];
}
}  // namespace
