// copy_weights (trainer/task.h): what an evaluation network of any task receives — the given
// weights by name, the training network's tensors for the rest — and the error for a shape that
// does not fit.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>

#include "ddpm/model/unet/options.h"
#include "ddpm/model/unet/unet.h"
#include "ddpm/trainer/task.h"

namespace ddpm::trainer {
namespace {

model::UNet tiny_unet(int64_t seed) {
  torch::manual_seed(static_cast<uint64_t>(seed));
  model::UNetOptions o = model::unet_preset("tiny");
  return model::UNet(o);
}

TEST(CopyWeights, GivenTensorsByNameTheRestFromTheTrainingNetwork) {
  model::UNet src = tiny_unet(1), dst = tiny_unet(2);
  const auto src_params = src->named_parameters();
  // Every other parameter is "given" (an EMA's value: src's plus 1); the rest must come from src.
  model::TensorDict given;
  std::map<std::string, at::Tensor> expected;
  int i = 0;
  for (const auto& p : src_params) {
    if (i++ % 2 == 0) {
      given.emplace_back(p.key(), p.value().detach() + 1.0);
      expected[p.key()] = p.value().detach() + 1.0;
    } else {
      expected[p.key()] = p.value().detach();
    }
  }
  ASSERT_GT(given.size(), 2u);
  copy_weights(*dst, given, *src);
  double worst = 0;
  for (const auto& p : dst->named_parameters()) {
    worst = std::max(worst, (p.value() - expected.at(p.key())).abs().max().item<double>());
  }
  std::printf("copy_weights: %zu parameters, %zu given, worst difference %.3g\n", expected.size(), given.size(), worst);
  EXPECT_EQ(worst, 0.0);
}

TEST(CopyWeights, AShapeThatDoesNotFitNamesTheTensor) {
  model::UNet src = tiny_unet(1), dst = tiny_unet(2);
  const auto first = src->named_parameters()[0];
  model::TensorDict given = {{first.key(), at::zeros({3, 1})}};
  try {
    copy_weights(*dst, given, *src);
    FAIL() << "a tensor of the wrong shape was copied";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(first.key()), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ddpm::trainer
