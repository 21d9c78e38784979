// --task classifier through the one training loop, in-process on every rank of mpirun (np 1 and
// 2): BIT-EXACT resume (N steps straight vs stopped by SIGTERM at N/2 and resumed: classifier
// weights, EMAs and optimizer identical bit for bit), accuracy by quartile of t in log.jsonl, a
// classifier that learns the bars (accuracy at low t well above chance), and the config errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "ddpm/data/dataset.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/dist/context.h"
#include "ddpm/model/unet/encoder_unet.h"
#include "ddpm/trainer/checkpoint.h"
#include "ddpm/trainer/classifier.h"
#include "ddpm/trainer/signals.h"
#include "ddpm/trainer/train_loop.h"
#include "testing/testing.h"
#include "trainer/loop/loop_fixtures.h"

namespace ddpm::trainer::testing {
namespace {

std::unique_ptr<dist::Communicator> g_comm;
dist::Communicator& comm() { return *g_comm; }

std::string shared_dir(const std::string& name) { return shared_test_dir(comm(), "classifier_loop", name); }

std::string dataset(const std::string& dir) { return shared_tiny_dataset(comm(), dir); }


// The tiny U-Net's encoder half on the 8x8 bars (4 classes), attention pooling over the 4x4 map.
TrainConfig classifier_config(const std::string& data, const std::string& run_dir, int64_t steps) {
  TrainConfig c = tiny_config(data, run_dir, steps);
  c.task = "classifier";
  c.num_classes = 4;
  c.model_overrides = Json{{"in_channels", 1}, {"image_size", 8}, {"attention_resolutions", "4"}};
  validate(c);
  return c;
}


TEST(ClassifierLoop, BitExactResumeAfterSigterm) {
  const std::string dir = shared_dir("bitexact");
  const std::string data = dataset(dir);
  std::pair<TrainState, TrainState> states;
  ASSERT_NO_FATAL_FAILURE(check_bit_exact_resume(
      comm(), [&](const std::string& run) { return classifier_config(data, dir + "/" + run, 10); }, 10, 5,
      "classifier", states));
  const TrainState& a = states.first;
  ASSERT_EQ(a.emas.size(), 2u);
  // model.pt holds guided-diffusion's EncoderUNetModel names.
  EXPECT_EQ(a.model.back().first, "out.2.c_proj.bias");
  EXPECT_EQ(a.model.back().second.sizes(), at::IntArrayRef({4}));
  EXPECT_EQ(a.config.at("task"), "classifier");
}

// 60 steps on the bars: log.jsonl has the accuracy by quartile of t, and at low noise (q0) the
// classifier reads the bar: its accuracy over the last 20 steps is far above chance (0.25).
TEST(ClassifierLoop, LearnsTheBarsAndLogsAccuracyByQuartile) {
  const std::string dir = shared_dir("learns");
  const std::string data = dataset(dir);
  TrainConfig c = classifier_config(data, dir + "/run", 60);
  c.diffusion_steps = 40;
  c.lr = 2e-3;
  const TrainOutcome out = train(c, comm(), at::kCPU, quiet_hooks());
  ASSERT_EQ(out.step, 60);
  const std::vector<Json> rec = train_records(dir + "/run");
  ASSERT_EQ(rec.size(), 60u);
  for (const char* key : {"loss", "accuracy", "accuracy_q0", "accuracy_q3", "loss_q0"}) {
    EXPECT_TRUE(rec.back().contains(key)) << key << " missing in " << rec.back().dump();
  }
  EXPECT_FALSE(rec.back().contains("mse"));
  EXPECT_FALSE(rec.back().contains("vb"));
  double first = 0, last = 0, acc_q0 = 0, n_q0 = 0;
  for (int i = 0; i < 5; ++i) {
    first += rec[i].at("loss").get<double>() / 5;
    last += rec[rec.size() - 1 - i].at("loss").get<double>() / 5;
  }
  for (size_t i = rec.size() - 20; i < rec.size(); ++i) {
    if (rec[i].at("accuracy_q0").is_number()) acc_q0 += rec[i].at("accuracy_q0").get<double>(), n_q0 += 1;
  }
  acc_q0 /= std::max(1.0, n_q0);
  std::printf("[classifier] loss first 5 steps %.4f, last 5 %.4f; accuracy at t in q0 over the last 20 steps %.3f "
              "(chance 0.25, must be > 0.6)\n", first, last, acc_q0);
  EXPECT_LT(last, 0.7 * first);
  EXPECT_GT(acc_q0, 0.6);
}

TEST(ClassifierLoop, ConfigErrorsNameTheFlag) {
  const std::string dir = shared_dir("errors");
  const std::string data = dataset(dir);
  const auto error_of = [&](const std::function<void(TrainConfig&)>& change) {
    TrainConfig c = classifier_config(data, dir + "/run", 2);
    change(c);
    try {
      validate(c);
      train(c, comm(), at::kCPU, quiet_hooks());
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  const struct {
    std::function<void(TrainConfig&)> change;
    std::string expect;
  } cases[] = {
      {[](TrainConfig& c) { c.sample_every = 5; }, "--sample-every"},
      {[](TrainConfig& c) { c.fid_every = 5; }, "--fid-every"},
      {[](TrainConfig& c) { c.bpd_every = 5; }, "--bpd-every"},
      {[](TrainConfig& c) { c.num_classes = 0; }, "--num-classes"},
      {[](TrainConfig& c) { c.label_dropout = 0.1; }, "--label-dropout"},
      {[](TrainConfig& c) { c.timestep_sampler = "loss-second-moment"; }, "--timestep-sampler"},
      {[](TrainConfig& c) { c.model_overrides["image_size"] = 16; c.model_overrides["attention_resolutions"] = "8"; },
       "image_size 8"},
      {[](TrainConfig& c) { c.model_overrides["pool"] = "spatial"; }, "pool"},
      {[](TrainConfig& c) { c.num_classes = 3; }, "--num-classes 4"},
  };
  for (const auto& k : cases) {
    const std::string e = error_of(k.change);
    EXPECT_NE(e.find(k.expect), std::string::npos) << "expected '" << k.expect << "' in: " << e;
  }
  // A dataset without labels: the Trainer's own check.
  const std::string unlabelled = dir + "/nolabels.h5";
  if (comm().rank() == 0) {
    data::DatasetInfo info;
    info.count = 16, info.height = 8, info.width = 8, info.channels = 1;
    data::DatasetWriter w(unlabelled, info);
    w.write_images(0, at::zeros({16, 8, 8, 1}, at::kByte));
    w.finish();
  }
  comm().barrier();
  const std::string e = error_of([&](TrainConfig& c) { c.data = unlabelled; });
  EXPECT_NE(e.find("has no /labels"), std::string::npos) << e;
}

}  // namespace
}  // namespace ddpm::trainer::testing

int main(int argc, char** argv) {
  return ddpm::trainer::testing::run_tests_on_every_rank(argc, argv, ddpm::trainer::testing::g_comm);
}
