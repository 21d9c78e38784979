// Tensor dicts round-trip through ddpm and through Python's torch.load / torch.save.
#include <ATen/ATen.h>

#include <cstdlib>
#include <fstream>

#include "ddpm/model/tensor_dict.h"
#include "testing/testing.h"

namespace {
using ddpm::model::TensorDict;

int run_python(const std::string& code) {
  const std::string py = std::getenv("DDPM_PYTHON") ? std::getenv("DDPM_PYTHON") : "python3";
  return std::system((py + " -c \"" + code + "\"").c_str());
}

TEST(TensorDict, RoundTripKeepsOrderValuesAndTypes) {
  const std::string path = ddpm::testing::temp_dir("tensor_dict") + "/w.pt";
  const TensorDict in = {{"b.weight", at::randn({3, 4}, at::kDouble)},
                         {"a.bias", at::arange(5, at::kLong)},
                         {"c", at::rand({2, 2, 2}).to(at::kBFloat16)}};
  ddpm::model::save_tensor_dict(path, in);
  const TensorDict out = ddpm::model::load_tensor_dict(path);
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(out[i].first, in[i].first);
    EXPECT_EQ(out[i].second.scalar_type(), in[i].second.scalar_type());
    EXPECT_TRUE(ddpm::testing::tensors_near(out[i].second.to(at::kDouble), in[i].second.to(at::kDouble),
                                            0, 0, "round trip " + in[i].first));
  }
}

TEST(TensorDict, PythonReadsOursAndWeReadPythons) {
  const std::string dir = ddpm::testing::temp_dir("tensor_dict_py");
  ddpm::model::save_tensor_dict(dir + "/ours.pt", {{"x", at::arange(6, at::kFloat).view({2, 3})}});
  // Python checks our file, then writes one of its own for us to read.
  ASSERT_EQ(run_python("import torch; d=torch.load('" + dir + "/ours.pt'); "
                       "assert list(d)==['x'] and d['x'].tolist()==[[0,1,2],[3,4,5]], d; "
                       "torch.save({'w': torch.full((2,), 2.5), 'n': torch.tensor([7])}, '" + dir + "/py.pt')"),
            0);
  const TensorDict d = ddpm::model::load_tensor_dict(dir + "/py.pt");
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].first, "w");
  EXPECT_TRUE(ddpm::testing::tensors_near(d[0].second, at::full({2}, 2.5), 0, 0, "python w"));
  EXPECT_EQ(d[1].second.item<int64_t>(), 7);
}

TEST(TensorDict, ClearErrors) {
  const std::string dir = ddpm::testing::temp_dir("tensor_dict_err");
  EXPECT_THROW(ddpm::model::load_tensor_dict(dir + "/missing.pt"), std::runtime_error);
  std::ofstream(dir + "/junk.pt") << "not a zip";
  try {
    ddpm::model::load_tensor_dict(dir + "/junk.pt");
    FAIL() << "junk accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("junk.pt"), std::string::npos) << e.what();
  }
}
}  // namespace

namespace {
// A PyTorch state_dict is a collections.OrderedDict with _metadata (improved-diffusion saves
// exactly that): it must load with its keys in order.
TEST(TensorDict, ReadsPythonStateDictOrderedDict) {
  const std::string dir = ddpm::testing::temp_dir("tensor_dict_sd");
  ASSERT_EQ(run_python("import torch; torch.manual_seed(0); "
                       "m=torch.nn.Sequential(torch.nn.Conv2d(1,2,3), torch.nn.GroupNorm(1,2), torch.nn.Linear(4,3)); "
                       "sd=m.state_dict(); assert type(sd).__name__=='OrderedDict' and hasattr(sd,'_metadata'); "
                       "torch.save(sd, '" + dir + "/sd.pt'); "
                       "torch.save({k: v.double().sum() for k, v in sd.items()}, '" + dir + "/sums.pt')"),
            0);
  const TensorDict sd = ddpm::model::load_tensor_dict(dir + "/sd.pt");
  const TensorDict sums = ddpm::model::load_tensor_dict(dir + "/sums.pt");
  ASSERT_EQ(sd.size(), 6u);
  ASSERT_EQ(sums.size(), sd.size());
  const std::vector<std::string> names = {"0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"};
  for (size_t i = 0; i < sd.size(); ++i) {
    EXPECT_EQ(sd[i].first, names[i]);
    EXPECT_TRUE(ddpm::testing::tensors_near(sd[i].second.to(at::kDouble).sum(), sums[i].second, 1e-12, 0,
                                            "state_dict " + names[i]));
  }
}
}  // namespace
